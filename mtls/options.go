package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// Options is everything a front needs, already loaded (certificates parsed, CRL stores
// built). Config.Options builds one from the YAML file; tests build one directly.
type Options struct {
	// Certificates are the front's own server certificates.
	Certificates []tls.Certificate
	// ClientRoots are the CA roots client certificates must chain to.
	ClientRoots *x509.CertPool
	// ClientIntermediates help build chains for clients that send only their leaf;
	// they are named as acceptable CAs in the CertificateRequest, with the roots and
	// the CRL issuers.
	ClientIntermediates []*x509.Certificate
	// CRLs hold one store per issuing CA. A client certificate whose issuer has no
	// store here is refused: revocation status unknown means no.
	CRLs []*crl.Store

	// Backend is the IMAP server behind the front.
	Backend BackendOptions
	// POP3 is the POP3 gate's backend (pop3.go); unused unless ServePOP3 runs.
	POP3 POP3Options
	// SMTP is the SMTP submission gate's backend and settings (smtp.go); unused
	// unless ServeSMTP runs.
	SMTP SMTPOptions

	// Identity binds the login name to the certificate; nil is IdentityEmail.
	Identity *IdentityPolicy

	// HandshakeTimeout bounds the TLS handshake; default 10s.
	HandshakeTimeout time.Duration
	// PreAuthTimeout bounds the wait for each pre-auth command; default 60s.
	PreAuthTimeout time.Duration
	// PreAuthTotal bounds the whole time from accept to login, on both ports and
	// STARTTLS included; default 2m.
	PreAuthTotal time.Duration
	// MaxBadCommands before the front says BYE; default 5.
	MaxBadCommands int
	// MaxLoginsPerConnection is how many LOGIN or AUTHENTICATE attempts one connection
	// may make; the next one gets BYE. Default 6.
	MaxLoginsPerConnection int
	// DrainTimeout is how long Shutdown lets sessions run on; default 30s.
	DrainTimeout time.Duration

	Limits   Limits
	Throttle Throttle

	// SessionTicketKeys, when set, are shared by all fronts so tickets resume on any.
	SessionTicketKeys [][32]byte
	// DisableSessionTickets turns resumption off.
	DisableSessionTickets bool
	// ResumptionMaxAge bounds TLS resumption by the age of the full handshake in
	// which the client proved its key; default 1h (sessionTLS).
	ResumptionMaxAge time.Duration

	// Time, when set, is the clock of TLS and of the resumption bound (tests); nil is
	// time.Now.
	Time func() time.Time

	// TrustedProxies may send a PROXY protocol v2 header; others may not.
	TrustedProxies []netip.Prefix

	// Logger gets one JSON line per decision; default slog.Default().
	Logger *slog.Logger
}

// BackendOptions say where and how to log in to the IMAP server.
type BackendOptions struct {
	// Address is host:port of the IMAP server.
	Address string
	// TLS is how the connection to it is protected: BackendPlain (the default; plain
	// TCP on a trusted network), BackendImplicitTLS or BackendStartTLS.
	TLS BackendTLS
	// TLSConfig verifies the backend when TLS is on: RootCAs (nil: the system roots),
	// ServerName (empty: the host of Address) and, optionally, the front's own client
	// Certificates. MinVersion is raised to TLS 1.2. Verification cannot be turned off.
	TLSConfig *tls.Config
	// DialTimeout bounds the TCP connect, the TLS handshake and the greeting; default 5s.
	DialTimeout time.Duration
	// LoginTimeout bounds ID and LOGIN; default 30s, which outlasts Dovecot's auth
	// penalty (up to 15 s) and its auth_failure_delay (2 s).
	LoginTimeout time.Duration
}

// BackendTLS is how the front protects its connection to the backend.
type BackendTLS string

// Backend TLS modes, spelled as in the config file (backend.tls).
const (
	BackendPlain       BackendTLS = "none"     // plain TCP
	BackendImplicitTLS BackendTLS = "implicit" // TLS from the first byte (imaps, port 993)
	BackendStartTLS    BackendTLS = "starttls" // plain IMAP, then STARTTLS before anything else
)

// backendTLSConfig completes the backend's client TLS config: TLS 1.2 or later, the
// server name from the address, a session cache so that logins resume TLS sessions.
func backendTLSConfig(b *BackendOptions) (*tls.Config, error) {
	switch b.TLS {
	case "", BackendPlain:
		if b.TLSConfig != nil {
			return nil, errors.New("mtls: backend TLS settings are set but backend.tls is none: set backend.tls to implicit or starttls, or drop them")
		}
		b.TLS = BackendPlain
		return nil, nil
	case BackendImplicitTLS, BackendStartTLS:
	default:
		return nil, fmt.Errorf("mtls: backend.tls %q: want none, implicit or starttls", b.TLS)
	}
	var cfg *tls.Config
	if b.TLSConfig != nil {
		if b.TLSConfig.InsecureSkipVerify {
			return nil, errors.New("mtls: backend TLS without certificate verification is not supported: give the backend's CA in backend.ca_file")
		}
		cfg = b.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(b.Address)
		if err != nil {
			return nil, fmt.Errorf("mtls: backend.address %q: %w", b.Address, err)
		}
		cfg.ServerName = host
	}
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	return cfg, nil
}

// validate reports every problem of o at once: what must have been loaded
// (checkLoaded) and the settings (checkSettings). Config.Options reports
// checkSettings together with the files that failed to load.
func (o *Options) validate() error {
	return errors.Join(o.checkLoaded(), o.checkSettings())
}

// checkLoaded: the certificates, roots and CRL stores a front cannot run without.
func (o *Options) checkLoaded() error {
	var errs []error
	if len(o.Certificates) == 0 {
		errs = append(errs, errors.New("mtls: no server certificate: set tls.cert_file and tls.key_file"))
	}
	if o.ClientRoots == nil {
		errs = append(errs, errors.New("mtls: no client CA: set tls.client_ca_file to the CA root(s) that issue user certificates"))
	}
	if len(o.CRLs) == 0 {
		errs = append(errs, errors.New("mtls: no CRL source: set crl (url or file, and issuer_file); the front refuses to run without revocation checks"))
	}
	return errors.Join(errs...)
}

// checkSettings: the backend, the limits and the throttle.
func (o *Options) checkSettings() error {
	var errs []error
	if o.Backend.Address == "" {
		errs = append(errs, errors.New("mtls: no backend: set backend.address to the IMAP server's host:port (e.g. 127.0.0.1:143)"))
	} else if _, _, err := net.SplitHostPort(o.Backend.Address); err != nil {
		errs = append(errs, fmt.Errorf("mtls: backend.address %q: %w", o.Backend.Address, err))
	}
	b := o.Backend // backendTLSConfig fills in b
	if _, err := backendTLSConfig(&b); err != nil {
		errs = append(errs, err)
	}
	for _, g := range []struct {
		name string
		b    BackendOptions
	}{{"pop3", o.POP3.Backend}, {"smtp", o.SMTP.Backend}} {
		if p := g.b; p.Address != "" {
			if _, _, err := net.SplitHostPort(p.Address); err != nil {
				errs = append(errs, fmt.Errorf("mtls: %s.backend.address %q: %w", g.name, p.Address, err))
			} else if _, err := backendTLSConfig(&p); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", g.name, err))
			}
		}
	}
	if h := o.SMTP.Hostname; h != "" && (printable(h) == "" || strings.ContainsAny(h, " ") || len(h) > smtpMaxDomain) {
		errs = append(errs, fmt.Errorf("mtls: smtp.hostname %q: want a host name (printable, no spaces)", h))
	}
	if err := o.Limits.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Throttle.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// setDefaults fills in every unset duration and count.
func (o *Options) setDefaults() {
	setDefault(&o.HandshakeTimeout, 10*time.Second)
	setDefault(&o.PreAuthTimeout, 60*time.Second)
	setDefault(&o.PreAuthTotal, 2*time.Minute)
	setDefault(&o.DrainTimeout, 30*time.Second)
	setDefault(&o.ResumptionMaxAge, time.Hour)
	setDefault(&o.Backend.DialTimeout, 5*time.Second)
	setDefault(&o.Backend.LoginTimeout, 30*time.Second)
	setDefault(&o.POP3.Backend.DialTimeout, 5*time.Second)
	setDefault(&o.POP3.Backend.LoginTimeout, 30*time.Second)
	o.SMTP.setDefaults()
	if o.MaxBadCommands <= 0 {
		o.MaxBadCommands = 5
	}
	if o.MaxLoginsPerConnection <= 0 {
		o.MaxLoginsPerConnection = 6
	}
	o.Limits.setDefaults()
	o.Throttle.setDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// now is the front's clock (Options.Time, or time.Now).
func (o *Options) now() time.Time {
	if o.Time != nil {
		return o.Time()
	}
	return time.Now()
}
