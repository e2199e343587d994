package pkcs11

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"path/filepath"
	"strings"

	p11 "github.com/miekg/pkcs11"
)

// Profile holds everything that differs between PKCS#11 modules, in one place.
// The rest of the package asks the profile instead of testing module names.
type Profile struct {
	// Name is "softhsm2", "generic" or "ykcs11".
	Name string
	// SOForWrite: key generation and certificate import need an SO login
	// (ykcs11: the PIV management key); signing still needs the user PIN.
	SOForWrite bool
	// FixedKeyID, when set, is the CKA_ID of every new key: ykcs11 maps
	// CKA_ID to a PIV slot, and {0x01} is slot 9a (PIV Authentication, PIN
	// once per session). Never 9c: it asks for the PIN on every signature.
	// Otherwise a random 16-byte CKA_ID is used.
	FixedKeyID []byte
	// ExtractableAttr: the module accepts CKA_EXTRACTABLE in a template
	// (ykcs11 2.2.0 rejects it with CKR_ATTRIBUTE_TYPE_INVALID; PIV keys
	// generated on the card can never be exported anyway).
	ExtractableAttr bool
	// UnblockWithPUK: no C_InitPIN; a blocked PIN is reset with the PUK
	// through C_SetPIN("puk:<PUK>", "pin:<new>").
	UnblockWithPUK bool
	// CACerts: the token can hold CA certificates without a key (ykcs11 only
	// has PIV slots, each for a key and its certificate).
	CACerts bool
	// LabelsFixed: the module ignores CKA_LABEL and names objects itself.
	LabelsFixed bool
	// MaxCertSize is the largest DER certificate the token stores (0: no
	// known limit). ykcs11: a PIV object is at most 3072 bytes including
	// 9 bytes of framing.
	MaxCertSize int
	// KeyTypes the profile supports.
	KeyTypes []KeyType
}

var (
	profileGeneric = &Profile{
		Name: "generic", ExtractableAttr: true, CACerts: true,
		KeyTypes: []KeyType{KeyECP256, KeyRSA2048},
	}
	profileSoftHSM = &Profile{
		Name: "softhsm2", ExtractableAttr: true, CACerts: true,
		KeyTypes: []KeyType{KeyECP256, KeyRSA2048},
	}
	profileYKCS11 = &Profile{
		Name: "ykcs11", SOForWrite: true, FixedKeyID: []byte{0x01},
		UnblockWithPUK: true, LabelsFixed: true, MaxCertSize: 3072 - 9,
		KeyTypes: []KeyType{KeyECP256, KeyRSA2048},
	}
)

// profileFor picks the profile from what the module says about itself, and
// from its file name as a fallback.
func profileFor(path string, info p11.Info) *Profile {
	man := strings.ToLower(info.ManufacturerID + " " + info.LibraryDescription)
	base := strings.ToLower(filepath.Base(path))
	switch {
	case strings.Contains(man, "yubico") || strings.Contains(base, "ykcs11"):
		return profileYKCS11
	case strings.Contains(man, "softhsm") || strings.Contains(base, "softhsm"):
		return profileSoftHSM
	}
	return profileGeneric
}

// ProfileByName returns a known profile ("softhsm2", "generic", "ykcs11").
func ProfileByName(name string) (*Profile, bool) {
	for _, p := range []*Profile{profileGeneric, profileSoftHSM, profileYKCS11} {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func (p *Profile) supports(kt KeyType) bool {
	for _, k := range p.KeyTypes {
		if k == kt {
			return true
		}
	}
	return false
}

// DER OID of prime256v1, the CKA_EC_PARAMS for P-256.
var oidP256Params = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// keyTemplates returns the public and private key templates. Every
// attribute is explicit: SoftHSM, for one, makes a private key
// non-sensitive unless told otherwise.
func (p *Profile) keyTemplates(kt KeyType, id []byte, label string) (pub, priv []*p11.Attribute, mech uint, err error) {
	pub = []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	priv = []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	if p.ExtractableAttr {
		priv = append(priv, p11.NewAttribute(p11.CKA_EXTRACTABLE, false))
	}
	switch kt {
	case KeyECP256:
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_EC_PARAMS, oidP256Params))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC))
		mech = p11.CKM_EC_KEY_PAIR_GEN
	case KeyRSA2048:
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS_BITS, 2048),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA))
		mech = p11.CKM_RSA_PKCS_KEY_PAIR_GEN
	default:
		return nil, nil, 0, fmt.Errorf("pkcs11: key type %q: %w", kt, ErrNotSupported)
	}
	return pub, priv, mech, nil
}

// certTemplate is the certificate object NSS, OpenSC and p11-kit pair with
// its key: same CKA_ID, CKA_PRIVATE false (NSS does not show a private
// certificate before login), CKA_ISSUER and CKA_SERIAL_NUMBER (without them
// NSS does not show it at all). No CKA_MODIFIABLE: ykcs11 rejects it.
func (p *Profile) certTemplate(cert *x509.Certificate, id []byte, label string) ([]*p11.Attribute, error) {
	serial, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: encode certificate serial: %w", err)
	}
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
		p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_SUBJECT, cert.RawSubject),
		p11.NewAttribute(p11.CKA_ISSUER, cert.RawIssuer),
		p11.NewAttribute(p11.CKA_SERIAL_NUMBER, serial),
		p11.NewAttribute(p11.CKA_VALUE, cert.Raw),
	}, nil
}
