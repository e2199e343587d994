package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	p11 "github.com/miekg/pkcs11"
)

// EnrollRequest is one user's enrollment onto a token.
type EnrollRequest struct {
	// User is the mailbox login; it becomes the CSR's subject CN and its
	// email SAN (the identity the front binds to).
	User string
	// Label is the CKA_LABEL of the key pair and the certificate (the
	// Thunderbird nickname suffix). Default: DefaultLabel(User).
	Label string
	// KeyType defaults to KeyECP256.
	KeyType KeyType
	// PIN is the user PIN. If nil the token must already be logged in as
	// user (Token.Login), and the profile must not need SOForWrite.
	PIN *PIN
	// SOPIN is needed by profiles with SOForWrite (ykcs11: the PIV
	// management key, 48 hex digits).
	SOPIN *PIN
	// WriteCACerts also stores the issuing CA certificates on the token:
	// those of the returned chain after the leaf, and the root of Roots
	// that issued the last of them. A mail client that reads only the
	// token then has the chain: NSS (Thunderbird) offers a card's
	// certificate only when it can link it to a CA the server lists.
	// imapgate token enroll sets it unless --no-ca-certs.
	WriteCACerts bool
	// Roots are the CA's root certificates (a credential's roots.pem);
	// with WriteCACerts the one that issued the chain is written too.
	Roots []*x509.Certificate
	// Replace allows enrolling a token that already holds an imapgate
	// credential (a key with a certificate labelled imapgate-…, or, for
	// ykcs11, anything in PIV slot 9a). Without it such a token is refused
	// before anything is written. With it, the old key pairs and their
	// certificates are deleted once the new certificate is on the token
	// (ykcs11: the new key overwrites slot 9a at generation), and so are
	// the CA certificates imapgate wrote earlier that are not those of the
	// new chain (an old intermediate, another CA's root).
	Replace bool
}

// SignFunc has the CA sign a DER CSR and returns the chain, leaf first.
type SignFunc func(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error)

// EnrollResult is the receipt of an enrollment.
type EnrollResult struct {
	User        string
	Label       string
	KeyType     KeyType
	KeyID       []byte
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
	// Serial is the certificate serial as openssl prints it and the CA
	// names it: upper-case hex, even length.
	Serial      string
	NotAfter    time.Time
	TokenLabel  string
	TokenSerial string
	// Warnings are things that went wrong without failing the enrollment
	// (a CA certificate that could not be stored, say).
	Warnings []string
	// Replaced are the certificates of the credentials Replace took off
	// the token: revoke them.
	Replaced []*x509.Certificate
}

// Enroll generates a key pair on the token, signs a CSR for req.User with
// it on the token, passes the CSR to sign (which asks the CA), and writes
// the issued certificate beside the key. If anything fails after the key
// pair exists, the key pair and any certificate with its CKA_ID are removed
// again, so a failed enrollment leaves no half-written objects.
func (t *Token) Enroll(ctx context.Context, req EnrollRequest, sign SignFunc) (res *EnrollResult, err error) {
	prof := t.mod.profile
	if err := validateUser(req.User); err != nil {
		return nil, err
	}
	kt, err := ParseKeyType(string(req.KeyType))
	if err != nil {
		return nil, err
	}
	label := req.Label
	if label == "" {
		label = DefaultLabel(req.User)
	}
	// Credentials, WipePlan and Replace find imapgate's keys by their label:
	// a key they could not find would be left behind by all three.
	if !prof.LabelsFixed && !ownLabel(label) {
		return nil, fmt.Errorf("pkcs11: enroll %s: label %q: use a label that starts with %q and is not one of the CA's own (imapgate-intermediate, imapgate-root)", req.User, label, LabelPrefix+"-")
	}
	if sign == nil {
		return nil, errors.New("pkcs11: enroll: no CA signing function")
	}
	if prof.SOForWrite && (req.SOPIN.Empty() || req.PIN.Empty()) {
		return nil, fmt.Errorf("pkcs11: token %s (%s): enrollment needs both the user PIN and the SO PIN (the PIV management key)", t.info.Label, prof.Name)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11: enroll %s: %w", req.User, err)
	}

	// The user PIN first: it is checked before anything is written, and
	// the user login shows the private keys the check below must see.
	if !req.PIN.Empty() {
		err = t.Login(req.PIN)
	} else if !t.loggedInAs(p11.CKU_USER) {
		err = fmt.Errorf("pkcs11: token %s: enroll: %w: give the user PIN", t.info.Label, ErrNotLoggedIn)
	}
	if err != nil {
		return nil, err
	}
	old, err := t.Credentials()
	if err != nil {
		return nil, err
	}
	old, removedOrphans, err := t.removeOrphans(old)
	if err != nil {
		return nil, err
	}
	if len(old) > 0 && !req.Replace {
		how := "the old key is deleted once the new certificate is on the token"
		if prof.FixedKeyID != nil {
			how = "the new key overwrites slot 9a at once, so a failed enrollment leaves the token empty"
		}
		return nil, fmt.Errorf("pkcs11: token %s already holds %s: nothing was written; to renew or reassign the token pass --replace (%s), then revoke the old serial", t.info.Label, describeCredentials(old), how)
	}
	if prof.SOForWrite {
		// Key generation and import need the SO (the login switch drops
		// the user login).
		if err := t.LoginSO(req.SOPIN); err != nil {
			return nil, err
		}
	}

	key, err := t.GenerateKey(kt, label)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		if cerr := t.removeKey(key, req.SOPIN); cerr != nil {
			// A token pulled out mid-enrollment cannot be cleaned now.
			err = keyLeft(err, key.ID, key.Public, cerr)
		} else {
			err = fmt.Errorf("%w (the new key was removed from the token again)", err)
		}
		if prof.FixedKeyID != nil && len(old) > 0 {
			// PIV key generation overwrote the slot: the old credential
			// is gone whatever happens next.
			err = fmt.Errorf("%w; the key generation overwrote slot 9a, so the token's previous credential is gone too: revoke it (%s) and enroll again", err, describeCredentials(old))
		}
	}()

	if prof.SOForWrite {
		// Signing needs the user PIN; the login switch drops the SO login.
		if err := t.Login(req.PIN); err != nil {
			return nil, err
		}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: req.User},
		EmailAddresses: []string{req.User},
	}, key.Signer())
	if err != nil {
		return nil, fmt.Errorf("pkcs11: token %s: sign the certificate request on the token: %w", t.info.Label, err)
	}
	chain, err := sign(ctx, csr)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: enroll %s: the CA did not issue a certificate: %w", req.User, err)
	}
	if len(chain) == 0 || chain[0] == nil {
		return nil, fmt.Errorf("pkcs11: enroll %s: the CA returned no certificate", req.User)
	}
	leaf := chain[0]
	if !samePublicKey(leaf.PublicKey, key.Public) {
		return nil, fmt.Errorf("pkcs11: enroll %s: the CA returned a certificate for a different key (serial %s): refusing to store it", req.User, SerialHex(leaf.SerialNumber))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11: enroll %s: %w", req.User, err)
	}
	if prof.SOForWrite {
		if err := t.LoginSO(req.SOPIN); err != nil {
			return nil, err
		}
	}
	if err := t.WriteCertificate(leaf, key.ID, label); err != nil {
		return nil, err
	}
	res = &EnrollResult{
		User: req.User, Label: label, KeyType: kt, KeyID: key.ID,
		Certificate: leaf, Chain: chain,
		Serial: SerialHex(leaf.SerialNumber), NotAfter: leaf.NotAfter,
		TokenLabel: t.info.Label, TokenSerial: t.info.Serial,
	}
	res.Warnings = append(res.Warnings, removedOrphans...)
	res.Warnings = append(res.Warnings, t.writeChain(req, chain)...)
	if !prof.SOForWrite {
		// ykcs11's slot 9a was overwritten at key generation; elsewhere
		// the old credentials go now that the new one is complete.
		for _, c := range old {
			if bytes.Equal(c.ID, key.ID) {
				continue
			}
			if derr := t.removeID(c.ID); derr != nil {
				res.Warnings = append(res.Warnings, fmt.Sprintf("the old credential %s could not be deleted (%v): remove it with imapgate token wipe", c, derr))
			}
		}
	}
	for _, c := range old {
		res.Replaced = append(res.Replaced, c.Certs...)
	}
	if prof.SOForWrite {
		// Leave the token as a user would find it: no SO session.
		_ = t.Logout()
	}
	return res, nil
}

// writeChain stores the issuing CA certificates (WriteCACerts) and, with
// Replace, removes the CA certificates imapgate wrote before that are not
// among them. What fails is a warning: the user's credential is complete.
func (t *Token) writeChain(req EnrollRequest, chain []*x509.Certificate) []string {
	prof := t.mod.profile
	if !prof.CACerts {
		if req.WriteCACerts {
			return []string{fmt.Sprintf("token %s (%s) has no place for CA certificates: install the CA in the mail client instead", t.info.Label, prof.Name)}
		}
		return nil
	}
	var warnings []string
	var keep []*x509.Certificate
	if req.WriteCACerts {
		keep = issuingCerts(chain, req.Roots)
		for _, ca := range keep {
			if err := t.WriteCACertificate(ca); err != nil {
				warnings = append(warnings, err.Error())
			}
		}
	}
	if req.Replace {
		n, err := t.removeCACertsExcept(keep)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("%d old CA certificates removed, but not all: %v (imapgate token wipe removes them)", n, err))
		}
	}
	return warnings
}

// issuingCerts is the chain after its leaf, then the root among roots that
// signed the chain's last certificate (unless that one is self-signed).
func issuingCerts(chain, roots []*x509.Certificate) []*x509.Certificate {
	out := append([]*x509.Certificate{}, chain[1:]...)
	last := chain[len(chain)-1]
	if bytes.Equal(last.RawIssuer, last.RawSubject) && last.CheckSignatureFrom(last) == nil {
		return out
	}
	for _, r := range roots {
		if bytes.Equal(last.RawIssuer, r.RawSubject) && last.CheckSignatureFrom(r) == nil {
			return append(out, r)
		}
	}
	return out
}

func (t *Token) loggedInAs(u uint) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loggedIn == u
}

// removeKey undoes a key generation: the key pair and any certificate with
// its CKA_ID.
func (t *Token) removeKey(k *Key, soPIN *PIN) error {
	if t.mod.profile.SOForWrite {
		if err := t.LoginSO(soPIN); err != nil {
			return err
		}
		defer t.Logout()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, h := range []p11.ObjectHandle{k.priv, k.pub} {
		if err := t.mod.ctx.DestroyObject(t.sh, h); err != nil && !errors.Is(err, p11.Error(p11.CKR_OBJECT_HANDLE_INVALID)) {
			errs = append(errs, err)
		}
	}
	if _, err := t.deleteLocked([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
		p11.NewAttribute(p11.CKA_ID, k.ID),
	}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// keyLeft adds to err that the new key pair id (public key pub, nil when
// unread) could not be removed (the token was pulled out, say), and what
// will remove it. The result is a *KeyLeftError naming the key.
func keyLeft(err error, id []byte, pub crypto.PublicKey, cleanup error) error {
	why := strings.ReplaceAll(cleanup.Error(), "\n", "; ")
	return &KeyLeftError{ID: bytes.Clone(id), Public: pub,
		err: fmt.Errorf("%w; removing the new key %x failed too (%s): %w: it stays on the token without a certificate until the token's next enrollment removes it (or, with the PIN, the help desk UI's “Remove the leftover key”, or imapgate token wipe)", err, id, why, ErrKeyLeft)}
}

// removeOrphans deletes the key pairs among creds that have no certificate —
// what an enrollment interrupted after the key generation leaves when the
// token is pulled out before it can clean up — and returns the others, with
// a line for the receipt per key removed. Such a key is no credential: no
// mail client can use it, and no CA knows it. Profiles with a fixed key slot
// are left alone: their next key generation overwrites the slot anyway.
func (t *Token) removeOrphans(creds []Credential) ([]Credential, []string, error) {
	if t.mod.profile.FixedKeyID != nil {
		return creds, nil, nil
	}
	var keep []Credential
	var removed []string
	for _, c := range creds {
		if len(c.Certs) > 0 || t.hasCertID(c.ID) {
			// A certificate with the key's ID that Credentials did not
			// pair (no public key to compare) is not an interruption's.
			keep = append(keep, c)
			continue
		}
		// The key pair only: a certificate that merely shares the ID is
		// not this key's (Credentials pairs by public key).
		if err := t.removeID(c.ID, p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY); err != nil {
			return nil, nil, fmt.Errorf("pkcs11: token %s: remove %s, left by an interrupted enrollment: %w", t.info.Label, c, err)
		}
		removed = append(removed, fmt.Sprintf("removed %s, left by an interrupted enrollment", c))
	}
	return keep, removed, nil
}

// hasCertID says whether a certificate with CKA_ID id is on the token (or
// whether that cannot be read: then the key is kept).
func (t *Token) hasCertID(id []byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	hs, err := t.findLocked([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
		p11.NewAttribute(p11.CKA_ID, id),
	})
	return err != nil || len(hs) > 0
}

// removeID deletes the objects of the given classes with CKA_ID id:
// certificates and the key pair when no class is given.
func (t *Token) removeID(id []byte, classes ...uint) error {
	if len(classes) == 0 {
		classes = []uint{p11.CKO_CERTIFICATE, p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, class := range classes {
		if _, err := t.deleteLocked([]*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_ID, id),
		}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func validateUser(u string) error {
	switch {
	case u == "":
		return errors.New("pkcs11: enroll: no user given: pass the mailbox login, e.g. alice@example.org")
	case strings.ContainsAny(u, " \t\r\n<>\"(),;:\\[]"):
		return fmt.Errorf("pkcs11: enroll: user %q is not a mailbox login (no spaces or punctuation like <>,;)", u)
	}
	for _, r := range u {
		if r > 0x7e || r < 0x21 {
			return fmt.Errorf("pkcs11: enroll: user %q: only ASCII mailbox logins fit an rfc822Name SAN", u)
		}
	}
	return nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(x crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// KeyIDHex is the CKA_ID in hex, as pkcs11-tool and p11tool print it.
func (r *EnrollResult) KeyIDHex() string { return hex.EncodeToString(r.KeyID) }

// SerialHex formats a certificate serial the way openssl prints it and
// imapgate's CA names it: upper-case hex, even length.
func SerialHex(n *big.Int) string {
	s := strings.ToUpper(n.Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}
