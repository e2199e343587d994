package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/mail"
	"strings"
	"time"

	"github.com/imapgate/imapgate/caclient"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
)

// ErrBadRequest marks an error caused by the request (a bad CSR, identity or
// validity); the API answers it with 400 and its text.
var ErrBadRequest = errors.New("bad request")

// requestError carries the sentence the API returns for a bad request.
type requestError struct{ msg string }

func (e *requestError) Error() string        { return e.msg }
func (e *requestError) Is(target error) bool { return target == ErrBadRequest }

func badRequest(format string, a ...any) error {
	return &requestError{msg: fmt.Sprintf(format, a...)}
}

// userTemplate is the user certificate profile. An explicit template matters:
// without one smallstep copies the CSR's names verbatim and its name policy does
// not see e-mail SANs (../shared/notes/smallstep.md §7).
const userTemplate = `{
	"subject": {"commonName": {{ toJson .Imapgate.Identity }}},
	"emailAddresses": [{{ toJson .Imapgate.Identity }}],
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"],
	"crlDistributionPoints": [{{ toJson .Imapgate.CRL }}],
	"issuingCertificateURL": [{{ toJson .Imapgate.Issuer }}]
}`

// roleTemplate is the enrollment-agent / admin certificate profile.
const roleTemplate = `{
	"subject": {"commonName": {{ toJson .Imapgate.Name }}},
	"uris": [{{ toJson .Imapgate.RoleURI }}],
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"],
	"crlDistributionPoints": [{{ toJson .Imapgate.CRL }}],
	"issuingCertificateURL": [{{ toJson .Imapgate.Issuer }}]
}`

// SignRequest asks for a user certificate.
type SignRequest struct {
	CSR *x509.CertificateRequest
	// Identity is the mailbox login the certificate is bound to (an e-mail address).
	Identity string
	// Validity is the requested lifetime; zero means certificates.user_validity.
	Validity time.Duration
}

// Issued is a freshly signed certificate and the chain to send with it.
type Issued struct {
	Cert   *x509.Certificate
	Chain  []*x509.Certificate // leaf first, then the intermediate
	Record Record
}

type leafOptions []x509util.Option

// Options implements provisioner.CertificateOptions; smallstep's own adapter is unexported.
func (o leafOptions) Options(provisioner.SignOptions) []x509util.Option { return o }

// NormalizeIdentity checks that s is a mailbox login usable as an rfc822Name and
// returns it with the domain lower-cased.
func NormalizeIdentity(s string) (string, error) {
	if s == "" {
		return "", badRequest("no user given: pass the mailbox login, e.g. alice@example.org")
	}
	if len(s) > 254 {
		return "", badRequest("user %.40q… is longer than 254 characters", s)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", badRequest("user %q is not a plain e-mail address such as alice@example.org", s)
	}
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], strings.ToLower(s[at+1:])
	if local == "" || domain == "" || !strings.Contains(domain, ".") && domain != "localhost" {
		return "", badRequest("user %q has no domain such as example.org", s)
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return "", badRequest("user %q must be printable ASCII", s)
		}
	}
	return local + "@" + domain, nil
}

func (c *CA) checkDomain(identity string) error {
	if len(c.cfg.Certificates.AllowedDomains) == 0 {
		return nil
	}
	domain := identity[strings.LastIndexByte(identity, '@')+1:]
	for _, d := range c.cfg.Certificates.AllowedDomains {
		if strings.EqualFold(d, domain) {
			return nil
		}
	}
	return badRequest("domain %s is not one this CA issues for (certificates.allowed_domains: %s)",
		domain, strings.Join(c.cfg.Certificates.AllowedDomains, ", "))
}

// checkKey accepts EC P-256/P-384 and RSA 2048/3072, as smartcards and YubiKeys make them.
func checkKey(pub any) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "EC P-256", nil
		case elliptic.P384():
			return "EC P-384", nil
		}
		return "", badRequest("EC key on curve %s is not accepted: use P-256 (or P-384)", k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch n := k.N.BitLen(); n {
		case 2048, 3072:
			return fmt.Sprintf("RSA %d", n), nil
		default:
			return "", badRequest("RSA key of %d bits is not accepted: use EC P-256, or RSA 2048 or 3072", n)
		}
	}
	return "", badRequest("%T keys are not accepted: use EC P-256, P-384, or RSA 2048 or 3072", pub)
}

// checkCSR verifies the CSR's signature and key, and that every name it asks for
// agrees with identity (an empty CN or none at all is fine: the profile sets them).
func checkCSR(csr *x509.CertificateRequest, identity string) (string, error) {
	kt, err := checkCSRBasics(csr)
	if err != nil {
		return "", err
	}
	if cn := csr.Subject.CommonName; cn != "" && !strings.EqualFold(cn, identity) {
		return "", badRequest("the CSR's common name %q differs from the user %q", cn, identity)
	}
	for _, e := range csr.EmailAddresses {
		if !strings.EqualFold(e, identity) {
			return "", badRequest("the CSR asks for e-mail %q, not the user %q", e, identity)
		}
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.URIs) > 0 {
		return "", badRequest("the CSR asks for DNS, IP or URI names; a user certificate carries only the mailbox address")
	}
	return kt, nil
}

// checkCSRBasics is what every CSR must pass, whatever it asks for: a
// signature by its own key, and an accepted key type.
func checkCSRBasics(csr *x509.CertificateRequest) (string, error) {
	if csr == nil {
		return "", badRequest("no CSR given")
	}
	if err := csr.CheckSignature(); err != nil {
		return "", badRequest("the CSR's signature does not verify (%v): it was altered or not signed by its key", err)
	}
	if err := checkCSRExtensions(csr); err != nil {
		return "", err
	}
	return checkKey(csr.PublicKey)
}

// checkSignRequest applies the user-certificate policy that needs no CA state.
func checkSignRequest(req SignRequest) (identity, keyType string, err error) {
	if identity, err = NormalizeIdentity(req.Identity); err != nil {
		return "", "", err
	}
	if keyType, err = checkCSR(req.CSR, identity); err != nil {
		return "", "", err
	}
	return identity, keyType, nil
}

// ParseCSR decodes one PEM CERTIFICATE REQUEST (or raw DER).
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) == 0 {
		return nil, badRequest("the CSR is empty")
	}
	der := b
	if blk, rest := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, badRequest("expected a PEM CERTIFICATE REQUEST, got %q", blk.Type)
		}
		if strings.TrimSpace(string(rest)) != "" {
			return nil, badRequest("the CSR has trailing data after the PEM block")
		}
		der = blk.Bytes
	} else if strings.Contains(string(b), "-----BEGIN") {
		return nil, badRequest("the CSR's PEM is malformed")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, badRequest("the CSR cannot be parsed: %v", err)
	}
	return csr, nil
}

// Sign issues a user certificate for req.Identity. Nothing is stored when any
// check fails.
func (c *CA) Sign(ctx context.Context, req SignRequest, by Requester) (*Issued, error) {
	identity, keyType, err := checkSignRequest(req)
	if err != nil {
		return nil, err
	}
	if err := c.checkDomain(identity); err != nil {
		return nil, err
	}
	validity := req.Validity
	if validity == 0 {
		validity = c.cfg.Certificates.UserValidity.Duration
	}
	if validity < time.Hour || validity > c.cfg.Certificates.MaxUserValidity.Duration {
		return nil, badRequest("validity %s must be between 1h and %s", validity, c.cfg.Certificates.MaxUserValidity.Duration)
	}
	data := x509util.NewTemplateData()
	data.SetCertificateRequest(req.CSR)
	data.Set("Imapgate", map[string]string{"Identity": identity, "CRL": c.cfg.CRLURL(), "Issuer": c.cfg.IssuerURL()})
	pending, err := c.beginAudit(ctx, AuditEntry{Action: "issue", Kind: KindUser, User: identity}, by)
	if err != nil {
		return nil, err
	}
	iss, err := c.sign(ctx, req.CSR, userTemplate, data, validity)
	if err != nil {
		pending.finish(ctx, "", resultFailed, err.Error())
		return nil, fmt.Errorf("ca: sign for %s: %w", identity, err)
	}
	rec := newRecord(iss.Cert, identity, "", keyType, by)
	if err := c.record(ctx, iss, rec, pending); err != nil {
		return nil, fmt.Errorf("ca: sign for %s: %w", identity, err)
	}
	return iss, nil
}

// IssueRole signs a role certificate (an enrollment agent's or an admin's) for a
// key the requester holds. name becomes the certificate's common name.
func (c *CA) IssueRole(ctx context.Context, csr *x509.CertificateRequest, role Role, name string, by Requester) (*Issued, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return nil, badRequest("%v", err)
	}
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 64 {
		return nil, badRequest("name must be 1 to 64 characters (say, the help desk PC's name)")
	}
	keyType, err := checkCSRBasics(csr)
	if err != nil {
		return nil, err
	}
	data := x509util.NewTemplateData()
	data.SetCertificateRequest(csr)
	data.Set("Imapgate", map[string]string{"Name": name, "RoleURI": role.URI().String(), "CRL": c.cfg.CRLURL(), "Issuer": c.cfg.IssuerURL()})
	pending, err := c.beginAudit(ctx, AuditEntry{Action: "issue-role", Kind: KindRole, User: name, Reason: "role " + string(role)}, by)
	if err != nil {
		return nil, err
	}
	iss, err := c.sign(ctx, csr, roleTemplate, data, c.cfg.Certificates.RoleValidity.Duration)
	if err != nil {
		pending.finish(ctx, "", resultFailed, err.Error())
		return nil, fmt.Errorf("ca: issue %s certificate for %s: %w", role, name, err)
	}
	rec := newRecord(iss.Cert, "", role, keyType, by)
	if err := c.record(ctx, iss, rec, pending); err != nil {
		return nil, fmt.Errorf("ca: issue %s certificate for %s: %w", role, name, err)
	}
	return iss, nil
}

func (c *CA) sign(ctx context.Context, csr *x509.CertificateRequest, tpl string, data x509util.TemplateData, validity time.Duration) (*Issued, error) {
	now := c.now()
	// Always set validity explicitly: without a modifier smallstep issues a
	// certificate whose NotBefore equals its NotAfter.
	setValidity := provisioner.CertificateModifierFunc(func(crt *x509.Certificate, _ provisioner.SignOptions) error {
		crt.NotBefore = now.Add(-time.Minute).Truncate(time.Second).UTC()
		crt.NotAfter = now.Add(validity).Truncate(time.Second).UTC()
		if crt.NotAfter.After(c.inter.NotAfter) {
			crt.NotAfter = c.inter.NotAfter
		}
		return nil
	})
	chain, err := c.auth.SignWithContext(ctx, csr, provisioner.SignOptions{},
		leafOptions{x509util.WithTemplate(tpl, data)}, setValidity)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: chain[0], Chain: chain}, nil
}

// IssueCredential makes a key pair, has a role certificate issued for it and
// writes cert.pem, key.pem (0600) and roots.pem into dir, which must not exist
// or be empty. This is how `ca init` bootstraps the first admin.
func (c *CA) IssueCredential(ctx context.Context, role Role, name, dir string, by Requester) (*Issued, error) {
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, err
	}
	csr, err := x509util.CreateCertificateRequest(name, nil, key)
	if err != nil {
		return nil, err
	}
	iss, err := c.IssueRole(ctx, csr, role, name, by)
	if err != nil {
		return nil, err
	}
	if err := WriteCredential(dir, iss.Chain, key, c.root); err != nil {
		return nil, err
	}
	return iss, nil
}

// WriteCredential writes a role credential directory (see caclient.WriteCredential).
func WriteCredential(dir string, chain []*x509.Certificate, key crypto.Signer, root *x509.Certificate) error {
	return caclient.WriteCredential(dir, encodeCerts(chain...), key, encodeCerts(root))
}

// SerialHex formats a serial the way openssl prints it: upper-case hex, even length.
func SerialHex(n *big.Int) string {
	s := strings.ToUpper(n.Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// ParseSerial accepts a serial in hex (as openssl prints it, optionally with
// colons or a 0x prefix).
func ParseSerial(s string) (*big.Int, error) {
	t := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	t = strings.TrimPrefix(strings.TrimPrefix(t, "0x"), "0X")
	if t == "" || len(t) > 64 {
		return nil, badRequest("serial %q is not a hex serial such as 3F2A…", s)
	}
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() <= 0 {
		return nil, badRequest("serial %q is not a hex serial such as 3F2A…", s)
	}
	return n, nil
}
