package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	p11 "github.com/miekg/pkcs11"
)

// LabelPrefix starts the CKA_LABEL of every object imapgate writes, followed
// by a dash; Wipe removes objects by it (and, for ykcs11, whose labels are
// fixed, by PIV slot).
const LabelPrefix = "imapgate"

// reservedLabels are imapgate labels that are not a user's token objects:
// the CA's own HSM key (ca init --kms) must never be wiped or replaced, and
// Enroll refuses to give them to a user's key.
var reservedLabels = map[string]bool{"imapgate-intermediate": true, "imapgate-root": true}

// ownLabel says whether label names an object imapgate wrote to a user token.
func ownLabel(label string) bool {
	return strings.HasPrefix(label, LabelPrefix+"-") && !reservedLabels[label]
}

// DefaultLabel is the label of a user's key and certificate. NSS shows the
// certificate as "<token label>:<label>" in Thunderbird.
func DefaultLabel(user string) string { return LabelPrefix + "-" + user }

// ObjectClass names a PKCS#11 object class.
type ObjectClass string

// The classes this package creates and lists.
const (
	ClassCertificate ObjectClass = "certificate"
	ClassPrivateKey  ObjectClass = "private-key"
	ClassPublicKey   ObjectClass = "public-key"
	ClassOther       ObjectClass = "other"
)

// Object is one object on the token, as far as a help desk cares.
type Object struct {
	Class ObjectClass
	ID    []byte
	Label string
	// Cert is set for X.509 certificate objects.
	Cert *x509.Certificate
	// Public is a key object's public key (EC P-256 or RSA) when the
	// module shows it: CKA_EC_POINT of a public key object, CKA_MODULUS and
	// CKA_PUBLIC_EXPONENT of either half of an RSA pair; nil otherwise.
	Public crypto.PublicKey

	h p11.ObjectHandle
}

// IDHex is the CKA_ID in hex, as pkcs11-tool and p11tool print it.
func (o Object) IDHex() string { return hex.EncodeToString(o.ID) }

// Objects lists the objects visible in the session: certificates and public
// keys always, private keys only after a user login.
func (t *Token) Objects() ([]Object, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.objectsLocked(nil)
}

func (t *Token) findLocked(tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	c := t.mod.ctx
	if err := c.FindObjectsInit(t.sh, tmpl); err != nil {
		return nil, tokenError(t.info.Label, "find objects", err)
	}
	var all []p11.ObjectHandle
	for {
		hs, _, err := c.FindObjects(t.sh, 64)
		if err != nil {
			_ = c.FindObjectsFinal(t.sh)
			return nil, tokenError(t.info.Label, "find objects", err)
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := c.FindObjectsFinal(t.sh); err != nil {
		return nil, tokenError(t.info.Label, "find objects", err)
	}
	return all, nil
}

func (t *Token) objectsLocked(tmpl []*p11.Attribute) ([]Object, error) {
	hs, err := t.findLocked(tmpl)
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(hs))
	for _, h := range hs {
		// One attribute per call: a data object has no CKA_ID, and asking
		// for it with the others fails the whole call with
		// CKR_ATTRIBUTE_TYPE_INVALID. The class is the only one required.
		class, err := t.attrLocked(h, p11.CKA_CLASS)
		if err != nil {
			return nil, tokenError(t.info.Label, "read object class", err)
		}
		id, _ := t.attrLocked(h, p11.CKA_ID)
		label, _ := t.attrLocked(h, p11.CKA_LABEL)
		o := Object{ID: id, Label: string(label), h: h, Class: ClassOther}
		switch ulong(class) {
		case p11.CKO_CERTIFICATE:
			o.Class = ClassCertificate
			if v, err := t.mod.ctx.GetAttributeValue(t.sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); err == nil {
				o.Cert, _ = x509.ParseCertificate(v[0].Value)
			}
		case p11.CKO_PRIVATE_KEY:
			o.Class = ClassPrivateKey
			o.Public = t.keyPublicLocked(h)
		case p11.CKO_PUBLIC_KEY:
			o.Class = ClassPublicKey
			o.Public = t.keyPublicLocked(h)
		}
		out = append(out, o)
	}
	return out, nil
}

// keyPublicLocked reads the public part of a key object, or nil when the
// module does not show it (an EC private key has no CKA_EC_POINT).
func (t *Token) keyPublicLocked(h p11.ObjectHandle) crypto.PublicKey {
	kt, err := t.attrLocked(h, p11.CKA_KEY_TYPE)
	if err != nil {
		return nil
	}
	var pub crypto.PublicKey
	switch ulong(kt) {
	case p11.CKK_EC:
		pub, err = t.readPublicLocked(h, KeyECP256)
	case p11.CKK_RSA:
		pub, err = t.readPublicLocked(h, KeyRSA2048)
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	return pub
}

// attrLocked reads one attribute of an object.
func (t *Token) attrLocked(h p11.ObjectHandle, typ uint) ([]byte, error) {
	a, err := t.mod.ctx.GetAttributeValue(t.sh, h, []*p11.Attribute{p11.NewAttribute(typ, nil)})
	if err != nil {
		return nil, err
	}
	return a[0].Value, nil
}

// ulong decodes a CK_ULONG attribute value (native byte order, as the
// binding passes it through from C).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0)
}

// WriteCertificate stores cert on the token beside the key with the same
// CKA_ID, so that NSS, OpenSC and p11-kit pair them. For a profile with
// SOForWrite the caller must be logged in as SO.
func (t *Token) WriteCertificate(cert *x509.Certificate, id []byte, label string) error {
	if max := t.mod.profile.MaxCertSize; max > 0 && len(cert.Raw) > max {
		return fmt.Errorf("pkcs11: token %s: %w: the certificate is %d bytes, a %s slot holds at most %d: issue a smaller certificate (fewer extensions)",
			t.info.Label, ErrTokenFull, len(cert.Raw), t.mod.profile.Name, max)
	}
	tmpl, err := t.mod.profile.certTemplate(cert, id, label)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.mod.ctx.CreateObject(t.sh, tmpl); err != nil {
		return tokenError(t.info.Label, "write certificate "+SerialHex(cert.SerialNumber), err)
	}
	return nil
}

// WriteCACertificate stores a CA certificate (no key) on the token, so a
// client that reads only the token has the chain. The CKA_ID is the
// certificate's subject key identifier, or a hash of its public key.
func (t *Token) WriteCACertificate(cert *x509.Certificate) error {
	if !t.mod.profile.CACerts {
		return fmt.Errorf("pkcs11: token %s (%s): CA certificates: %w: install the CA in the mail client instead", t.info.Label, t.mod.profile.Name, ErrNotSupported)
	}
	id := cert.SubjectKeyId
	if len(id) == 0 {
		sum := sha1.Sum(cert.RawSubjectPublicKeyInfo)
		id = sum[:]
	}
	t.mu.Lock()
	existing, err := t.objectsLocked([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
		p11.NewAttribute(p11.CKA_ID, id),
	})
	t.mu.Unlock()
	if err != nil {
		return err
	}
	for _, o := range existing {
		if o.Cert != nil && bytes.Equal(o.Cert.Raw, cert.Raw) {
			return nil // already there, from an earlier enrollment
		}
	}
	return t.WriteCertificate(cert, id, caCertLabelPrefix+cert.Subject.CommonName)
}

// caCertLabelPrefix starts the label of a CA certificate WriteCACertificate stored.
const caCertLabelPrefix = LabelPrefix + "-ca "

// removeCACertsExcept deletes the CA certificates WriteCACertificate
// stored (by their label) that are not in keep, and says how many went.
func (t *Token) removeCACertsExcept(keep []*x509.Certificate) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	objs, err := t.objectsLocked([]*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE)})
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, o := range objs {
		if !strings.HasPrefix(o.Label, caCertLabelPrefix) || o.Cert == nil || !o.Cert.IsCA {
			continue
		}
		if slices.ContainsFunc(keep, func(c *x509.Certificate) bool { return bytes.Equal(c.Raw, o.Cert.Raw) }) {
			continue
		}
		if err := t.mod.ctx.DestroyObject(t.sh, o.h); err != nil {
			errs = append(errs, tokenError(t.info.Label, "delete old CA certificate "+o.Label, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// FindKey returns the key pair with CKA_ID id. The token must be logged in
// as user (private keys are invisible otherwise).
func (t *Token) FindKey(id []byte) (*Key, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	objs, err := t.objectsLocked([]*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)})
	if err != nil {
		return nil, err
	}
	k := &Key{ID: id, t: t}
	var havePriv, havePub bool
	for _, o := range objs {
		switch o.Class {
		case ClassPrivateKey:
			k.priv, k.Label, havePriv = o.h, o.Label, true
		case ClassPublicKey:
			k.pub, havePub = o.h, true
		case ClassCertificate:
			if o.Cert != nil && k.Public == nil {
				k.Public = o.Cert.PublicKey
			}
		}
	}
	if !havePriv {
		return nil, fmt.Errorf("pkcs11: token %s: no private key with ID %x (log in first; imapgate token show lists the objects)", t.info.Label, id)
	}
	a, err := t.mod.ctx.GetAttributeValue(t.sh, k.priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return nil, tokenError(t.info.Label, "read key type", err)
	}
	switch ulong(a[0].Value) {
	case p11.CKK_EC:
		k.Type = KeyECP256
	case p11.CKK_RSA:
		k.Type = KeyRSA2048
	default:
		return nil, fmt.Errorf("pkcs11: token %s: key %x: %w", t.info.Label, id, ErrNotSupported)
	}
	if havePub {
		if k.Public, err = t.readPublicLocked(k.pub, k.Type); err != nil {
			return nil, err
		}
	}
	if k.Public == nil {
		return nil, fmt.Errorf("pkcs11: token %s: key %x has neither a public key object nor a certificate", t.info.Label, id)
	}
	return k, nil
}

// DeleteID removes every object (keys and certificates) with CKA_ID id and
// returns how many went.
func (t *Token) DeleteID(id []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deleteLocked([]*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)})
}

func (t *Token) deleteLocked(tmpl []*p11.Attribute) (int, error) {
	hs, err := t.findLocked(tmpl)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, h := range hs {
		if err := t.mod.ctx.DestroyObject(t.sh, h); err != nil {
			errs = append(errs, tokenError(t.info.Label, "delete object", err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// WipePlan lists the objects Wipe would remove: every object whose label is
// imapgate's ("imapgate-…", but never the CA's own HSM key), and every object
// sharing a CKA_ID with one (so a key pair goes together with its
// certificate). For ykcs11, whose labels are fixed, it is every object in
// PIV slot 9a, imapgate's enrollment slot. Log in as user first, or private
// keys are not seen.
func (t *Token) WipePlan() ([]Object, error) {
	objs, err := t.Objects()
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, o := range objs {
		if ownLabel(o.Label) && len(o.ID) > 0 {
			ids[string(o.ID)] = true
		}
		if fid := t.mod.profile.FixedKeyID; fid != nil && bytes.Equal(o.ID, fid) {
			ids[string(o.ID)] = true
		}
	}
	var plan []Object
	for _, o := range objs {
		if ids[string(o.ID)] || ownLabel(o.Label) {
			plan = append(plan, o)
		}
	}
	return plan, nil
}

// Credential is a user key pair imapgate enrolled on a token, with the
// certificates of the same CKA_ID whose public key is the pair's (normally
// one). A certificate that only shares the CKA_ID (a prepared card) is not
// the credential's.
type Credential struct {
	ID    []byte
	Label string
	Certs []*x509.Certificate
}

func (c Credential) String() string {
	if len(c.Certs) == 0 {
		return fmt.Sprintf("a key with ID %x labelled %q and no certificate", c.ID, c.Label)
	}
	s := make([]string, len(c.Certs))
	for i, cert := range c.Certs {
		who := cert.Subject.CommonName
		if len(cert.EmailAddresses) > 0 {
			who = cert.EmailAddresses[0]
		}
		s[i] = fmt.Sprintf("the credential of %s (serial %s, valid until %s)", who, SerialHex(cert.SerialNumber), cert.NotAfter.UTC().Format("2006-01-02"))
	}
	return strings.Join(s, " and ")
}

func describeCredentials(cs []Credential) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, " and ")
}

// Credentials lists the user key pairs imapgate enrolled on the token: the
// private keys labelled "imapgate-…" (for ykcs11, whose labels are fixed:
// the key in PIV slot 9a), each with the certificate of the same CKA_ID.
// Log in as user first, or private keys are not seen.
func (t *Token) Credentials() ([]Credential, error) {
	objs, err := t.Objects()
	if err != nil {
		return nil, err
	}
	fid := t.mod.profile.FixedKeyID
	var out []Credential
	for _, o := range objs {
		if o.Class != ClassPrivateKey || len(o.ID) == 0 {
			continue
		}
		if fid != nil && !bytes.Equal(o.ID, fid) || fid == nil && !ownLabel(o.Label) {
			continue
		}
		c := Credential{ID: o.ID, Label: o.Label}
		pub := o.Public
		for _, p := range objs {
			if pub == nil && p.Class == ClassPublicKey && bytes.Equal(p.ID, o.ID) {
				pub = p.Public
			}
		}
		for _, p := range objs {
			if p.Class == ClassCertificate && p.Cert != nil && bytes.Equal(p.ID, o.ID) && pub != nil && samePublicKey(pub, p.Cert.PublicKey) {
				c.Certs = append(c.Certs, p.Cert)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// Wipe removes the objects WipePlan listed. For a profile with SOForWrite
// the caller must be logged in as SO.
func (t *Token) Wipe(plan []Object) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	var errs []error
	for _, o := range plan {
		if err := t.mod.ctx.DestroyObject(t.sh, o.h); err != nil {
			errs = append(errs, tokenError(t.info.Label, fmt.Sprintf("delete %s %q", o.Class, o.Label), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
