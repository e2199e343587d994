package ca

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
)

// serverTemplate is the TLS server certificate profile: a front's, or the
// CA's own HTTPS certificate. basicConstraints CA:FALSE is written out:
// NSS refuses an end-entity certificate that could be read as a CA.
const serverTemplate = `{
	"subject": {"commonName": {{ toJson .Imapgate.CN }}},
	"dnsNames": {{ toJson .Imapgate.DNS }},
	"ipAddresses": {{ toJson .Imapgate.IP }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["serverAuth"],
	"basicConstraints": {"isCA": false},
	"crlDistributionPoints": [{{ toJson .Imapgate.CRL }}],
	"issuingCertificateURL": [{{ toJson .Imapgate.Issuer }}]
}`

// Kinds of issued certificate, as Record.Kind names them.
const (
	KindUser   = "user"   // a mailbox user's, on a token
	KindRole   = "role"   // an enrollment agent's or admin's API credential
	KindServer = "server" // a TLS server's (a front's), from POST /api/v1/server
	KindCATLS  = "ca-tls" // the CA's own HTTPS certificate
)

// maxServerNames bounds the names of one server certificate.
const maxServerNames = 32

// ServerRequest asks for a TLS server certificate for exactly these names.
type ServerRequest struct {
	CSR *x509.CertificateRequest
	DNS []string
	IP  []net.IP
	// Validity is the lifetime; zero means certificates.server_validity.
	Validity time.Duration
}

// NormalizeDNSName checks a host name for a server certificate and returns
// it lower-cased. A leading "*." label (a wildcard) is allowed.
func NormalizeDNSName(s string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(s, "."))
	if n == "" || len(n) > 253 {
		return "", badRequest("DNS name %.60q must be 1 to 253 characters", s)
	}
	if net.ParseIP(n) != nil {
		return "", badRequest("DNS name %q is an IP address: give it as ip (--ip), so it goes into an IP SAN", s)
	}
	labels := strings.Split(n, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 2 {
			continue
		}
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", badRequest("DNS name %q is not a host name such as mail.example.org", s)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return "", badRequest("DNS name %q is not a host name such as mail.example.org (letters, digits, '-' and '.' only; IP addresses go in ip)", s)
			}
		}
	}
	return n, nil
}

// normalizeServerNames checks and deduplicates the requested names.
func normalizeServerNames(dns []string, ips []net.IP) ([]string, []net.IP, error) {
	if len(dns)+len(ips) == 0 {
		return nil, nil, badRequest("no names given: a server certificate needs at least one DNS name or IP address (--dns mail.example.org)")
	}
	if len(dns)+len(ips) > maxServerNames {
		return nil, nil, badRequest("%d names asked for; a server certificate carries at most %d", len(dns)+len(ips), maxServerNames)
	}
	var outDNS []string
	for _, d := range dns {
		n, err := NormalizeDNSName(d)
		if err != nil {
			return nil, nil, err
		}
		if !slices.Contains(outDNS, n) {
			outDNS = append(outDNS, n)
		}
	}
	var outIP []net.IP
	for _, ip := range ips {
		if ip == nil || ip.IsUnspecified() {
			return nil, nil, badRequest("IP address %v cannot name a server", ip)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(outIP, ip.Equal) {
			outIP = append(outIP, ip)
		}
	}
	return outDNS, outIP, nil
}

// checkServerCSR verifies the CSR's signature, key and extensions, and that
// its names are exactly the requested ones: a name the admin did not ask for
// is refused, not dropped.
func checkServerCSR(csr *x509.CertificateRequest, dns []string, ips []net.IP) (string, error) {
	kt, err := checkCSRBasics(csr)
	if err != nil {
		return "", err
	}
	if len(csr.EmailAddresses)+len(csr.URIs) > 0 {
		return "", badRequest("the CSR asks for e-mail or URI names; a server certificate carries only DNS names and IP addresses")
	}
	var csrDNS []string
	for _, d := range csr.DNSNames {
		n, err := NormalizeDNSName(d)
		if err != nil {
			return "", badRequest("the CSR's DNS name %q is not a host name", d)
		}
		if !slices.Contains(dns, n) {
			return "", badRequest("the CSR asks for DNS name %q, which was not requested (requested: %s)", d, strings.Join(dns, ", "))
		}
		csrDNS = append(csrDNS, n)
	}
	for _, ip := range csr.IPAddresses {
		if !slices.ContainsFunc(ips, ip.Equal) {
			return "", badRequest("the CSR asks for IP address %s, which was not requested", ip)
		}
	}
	for _, d := range dns {
		if !slices.Contains(csrDNS, d) {
			return "", badRequest("the CSR does not name %s, which was requested: the CSR's subjectAltName must list exactly the requested names", d)
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(csr.IPAddresses, ip.Equal) {
			return "", badRequest("the CSR does not name %s, which was requested: the CSR's subjectAltName must list exactly the requested names", ip)
		}
	}
	if cn := csr.Subject.CommonName; cn != "" {
		n, _ := NormalizeDNSName(cn)
		ip := net.ParseIP(cn)
		if !slices.Contains(dns, n) && (ip == nil || !slices.ContainsFunc(ips, ip.Equal)) {
			return "", badRequest("the CSR's common name %q is not one of the requested names", cn)
		}
	}
	return kt, nil
}

// IssueServer issues a TLS server certificate (EKU serverAuth, KeyUsage
// digitalSignature, CA:FALSE) for exactly req.DNS and req.IP. It is recorded
// like every certificate (listable, revocable). Nothing is stored when a
// check fails.
func (c *CA) IssueServer(ctx context.Context, req ServerRequest, by Requester) (*Issued, error) {
	return c.issueServer(ctx, req, KindServer, by)
}

func (c *CA) issueServer(ctx context.Context, req ServerRequest, kind string, by Requester) (*Issued, error) {
	dns, ips, err := normalizeServerNames(req.DNS, req.IP)
	if err != nil {
		return nil, err
	}
	what := strings.Join(serverNames(dns, ips), ", ")
	keyType, err := checkServerCSR(req.CSR, dns, ips)
	if err != nil {
		return nil, err
	}
	validity := req.Validity
	if validity == 0 {
		validity = c.cfg.Certificates.ServerValidity.Duration
	}
	if maxV := c.cfg.Certificates.MaxServerValidity.Duration; kind == KindServer && (validity < time.Hour || validity > maxV) {
		return nil, badRequest("validity %s must be between 1h and %s (certificates.max_server_validity)", validity, maxV)
	}
	ipStrs := ipStrings(ips)
	cn := serverNames(dns, ips)[0]
	data := x509util.NewTemplateData()
	data.SetCertificateRequest(req.CSR)
	data.Set("Imapgate", map[string]any{"CN": cn, "DNS": dns, "IP": ipStrs, "CRL": c.cfg.CRLURL(), "Issuer": c.cfg.IssuerURL()})
	pending, err := c.beginAudit(ctx, AuditEntry{Action: "issue-" + kind, Kind: kind, User: what}, by)
	if err != nil {
		return nil, err
	}
	iss, err := c.sign(ctx, req.CSR, serverTemplate, data, validity)
	if err != nil {
		pending.finish(ctx, "", resultFailed, err.Error())
		return nil, fmt.Errorf("ca: server certificate for %s: %w", what, err)
	}
	rec := newRecord(iss.Cert, "", "", keyType, by)
	rec.Kind, rec.DNSNames, rec.IPAddresses = kind, dns, ipStrs
	if err := c.record(ctx, iss, rec, pending); err != nil {
		return nil, fmt.Errorf("ca: server certificate for %s: %w", what, err)
	}
	return iss, nil
}

func serverNames(dns []string, ips []net.IP) []string {
	return append(append([]string{}, dns...), ipStrings(ips)...)
}

// ServerCertificate makes an EC P-256 key in this process and has the CA
// issue a server certificate for it, without HTTP: what `imapgate serve`
// gives its front. The chain is leaf then intermediate, and Leaf is set.
// validity 0 means certificates.server_validity.
func (c *CA) ServerCertificate(ctx context.Context, dns []string, ips []net.IP, validity time.Duration, by Requester) (tls.Certificate, error) {
	return c.newServerCert(ctx, dns, ips, validity, KindServer, by)
}

func (c *CA) newServerCert(ctx context.Context, dns []string, ips []net.IP, validity time.Duration, kind string, by Requester) (tls.Certificate, error) {
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return tls.Certificate{}, err
	}
	dns, ips, err = normalizeServerNames(dns, ips)
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dns, IPAddresses: ips}, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: server certificate: CSR: %w", err)
	}
	parsed, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return tls.Certificate{}, err
	}
	iss, err := c.issueServer(ctx, ServerRequest{CSR: parsed, DNS: dns, IP: ips, Validity: validity}, kind, by)
	if err != nil {
		return tls.Certificate{}, err
	}
	out := tls.Certificate{PrivateKey: key, Leaf: iss.Cert}
	for _, crt := range iss.Chain {
		out.Certificate = append(out.Certificate, crt.Raw)
	}
	return out, nil
}
