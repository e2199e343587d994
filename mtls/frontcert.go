package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// frontCertWarnBefore is how long before its notAfter the front's own certificate is
// reported as expiring (at start, at reload, and as a --check failure).
const frontCertWarnBefore = 14 * 24 * time.Hour

// howToGetFrontCert ends every problem with the front's own certificate.
const howToGetFrontCert = "get a server certificate from the imapgate CA with `imapgate cert server --dns <mail host name> [--ip <address>] --out <dir>` (or from a public CA, e.g. an ACME client, when the mail programs do not trust the internal root) and point tls.cert_file and tls.key_file at it"

// frontCertProblems says what makes the front's own certificates unfit for mail
// programs at now: a CA certificate (NSS refuses it as
// MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY — what `openssl req -x509` makes), no
// extended key usage serverAuth, expired or expiring within 14 days. One sentence a
// problem, each saying how to get a proper certificate.
func frontCertProblems(certs []tls.Certificate, now time.Time) []string {
	var out []string
	for _, c := range certs {
		leaf, err := certLeaf(c)
		if err != nil {
			out = append(out, fmt.Sprintf("tls.cert_file: cannot parse the front's certificate: %v; %s", err, howToGetFrontCert))
			continue
		}
		name := leaf.Subject.String()
		if leaf.IsCA {
			out = append(out, fmt.Sprintf("tls.cert_file: the front's certificate %q is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes): Thunderbird refuses it (MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY); %s", name, howToGetFrontCert))
		}
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
			out = append(out, fmt.Sprintf("tls.cert_file: the front's certificate %q lacks the extended key usage serverAuth (TLS server): mail programs may refuse it; %s", name, howToGetFrontCert))
		}
		switch left := leaf.NotAfter.Sub(now); {
		case left <= 0:
			out = append(out, fmt.Sprintf("tls.cert_file: the front's certificate %q expired on %s: every mail program refuses it; %s", name, leaf.NotAfter.UTC().Format(time.DateOnly), howToGetFrontCert))
		case left < frontCertWarnBefore:
			out = append(out, fmt.Sprintf("tls.cert_file: the front's certificate %q expires on %s, in %d days: renew it now; %s", name, leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24), howToGetFrontCert))
		}
	}
	return out
}

// certLeaf is c's leaf certificate, parsed if c does not carry it.
func certLeaf(c tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// frontCertExpiry is the earliest notAfter of the front's own certificates (zero when
// none parses).
func frontCertExpiry(certs []tls.Certificate) time.Time {
	var first time.Time
	for _, c := range certs {
		if leaf, err := certLeaf(c); err == nil && (first.IsZero() || leaf.NotAfter.Before(first)) {
			first = leaf.NotAfter
		}
	}
	return first
}

// warnFrontCert logs each problem of o's own certificates (at start and at reload:
// the front still runs with them, `front --check` fails), and a backend.login_timeout
// too short for the backend's auth penalty.
func warnFrontCert(o *Options, when string) {
	for _, p := range frontCertProblems(o.Certificates, time.Now()) {
		o.Logger.Warn("front certificate problem", "event", when, "reason", p)
	}
	for _, p := range loginTimeoutProblems(o) {
		o.Logger.Warn("backend login timeout too short", "event", when, "reason", p)
	}
}

// loginTimeoutProblems: a login_timeout set below minLoginTimeout, for any gate's
// backend (POP3 is Dovecot too, and Postfix asks Dovecot's auth service), gives up
// before Dovecot decides a login it delays, and the user reads UNAVAILABLE while
// Dovecot logs them in.
func loginTimeoutProblems(o *Options) []string {
	var out []string
	for _, b := range []struct {
		key string
		bo  *BackendOptions
	}{{"backend", &o.Backend}, {"pop3.backend", &o.POP3.Backend}, {"smtp.backend", &o.SMTP.Backend}} {
		if b.key != "backend" && b.bo.Address == "" {
			continue // that gate is off
		}
		if d := b.bo.LoginTimeout; d > 0 && d < minLoginTimeout {
			out = append(out, fmt.Sprintf("%s.login_timeout %s is shorter than Dovecot's auth penalty (up to %s) plus its auth_failure_delay: the front may give up on a login the backend then accepts; set it to %s or more, and add the front to Dovecot's login_trusted_networks", b.key, d, dovecotMaxPenalty, minLoginTimeout))
		}
	}
	return out
}
