package mtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/secretfile"
)

// Config is the front's YAML configuration file. Every key and its default is documented
// in docs/front.md; keep the two in step.
type Config struct {
	Listen         string `yaml:"listen"`
	StartTLSListen string `yaml:"starttls_listen"`
	MetricsListen  string `yaml:"metrics_listen"`

	TLS struct {
		CertFile                string        `yaml:"cert_file"`
		KeyFile                 string        `yaml:"key_file"`
		ClientCAFile            string        `yaml:"client_ca_file"`
		ClientIntermediatesFile string        `yaml:"client_intermediates_file"`
		SessionTicketKeyFile    string        `yaml:"session_ticket_key_file"`
		SessionTickets          *bool         `yaml:"session_tickets"`
		ResumptionMaxAge        time.Duration `yaml:"resumption_max_age"`
	} `yaml:"tls"`

	CRL []CRLConfig `yaml:"crl"`
	// CRLStateFile keeps the highest CRL number seen per issuer across restarts.
	CRLStateFile string `yaml:"crl_state_file"`

	Backend BackendConfig `yaml:"backend"`
	// POP3 is the POP3 gate (pop3config.go); off unless it has a listen address.
	POP3 POP3Config `yaml:"pop3"`
	// SMTP is the SMTP submission gate (smtpconfig.go); off unless it has a listen
	// address.
	SMTP SMTPConfig `yaml:"smtp"`

	Identity struct {
		Mode    string   `yaml:"mode"`
		MapFile string   `yaml:"map_file"`
		Domains []string `yaml:"domains"`
	} `yaml:"identity"`

	Timeouts struct {
		Handshake    time.Duration `yaml:"handshake"`
		PreAuth      time.Duration `yaml:"preauth"`
		PreAuthTotal time.Duration `yaml:"preauth_total"`
		Drain        time.Duration `yaml:"drain"`
	} `yaml:"timeouts"`

	Limits struct {
		MaxConnections           int `yaml:"max_connections"`
		MaxConnectionsPerIP      int `yaml:"max_connections_per_ip"`
		HandshakesPerIPPerMinute int `yaml:"handshakes_per_ip_per_minute"`
		PreAuthShare             int `yaml:"preauth_share"`
		MaxPlainCommands         int `yaml:"max_plain_commands"`
		MaxBadCommands           int `yaml:"max_bad_commands"`
		MaxLoginsPerConnection   int `yaml:"max_logins_per_connection"`
	} `yaml:"limits"`

	Throttle struct {
		BaseDelay    time.Duration `yaml:"base_delay"`
		MaxDelay     time.Duration `yaml:"max_delay"`
		LockoutAfter int           `yaml:"lockout_after"`
		LockoutFor   time.Duration `yaml:"lockout_for"`
		Window       time.Duration `yaml:"window"`
		// AddressLockoutCertificates: see Throttle.
		AddressLockoutCertificates int `yaml:"address_lockout_certificates"`
	} `yaml:"throttle"`

	ProxyProtocol struct {
		TrustedNetworks []string `yaml:"trusted_networks"`
	} `yaml:"proxy_protocol"`
}

// BackendConfig is a backend section: backend (IMAP), pop3.backend or smtp.backend.
type BackendConfig struct {
	Address      string        `yaml:"address"`
	TLS          string        `yaml:"tls"`
	CAFile       string        `yaml:"ca_file"`
	ServerName   string        `yaml:"server_name"`
	CertFile     string        `yaml:"cert_file"`
	KeyFile      string        `yaml:"key_file"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	LoginTimeout time.Duration `yaml:"login_timeout"`
}

// DefaultCRLStateFile is where the front keeps the highest CRL number it has seen per
// issuer unless crl_state_file says otherwise: an older CRL is refused after a restart
// or reload too (rollback protection). Its directory is created (0700) at start.
const DefaultCRLStateFile = "/var/lib/imapgate/front-crl-state.json"

// CRLConfig is one CRL source: the CA's /crl URL or a file, and the issuer that signs it.
type CRLConfig struct {
	URL        string        `yaml:"url"`
	File       string        `yaml:"file"`
	IssuerFile string        `yaml:"issuer_file"`
	CAFile     string        `yaml:"ca_file"`
	Interval   time.Duration `yaml:"interval"`
	Grace      time.Duration `yaml:"grace"`
	MaxAge     time.Duration `yaml:"max_age"`
	// FetchTimeout bounds one whole poll (connection, headers, body).
	FetchTimeout time.Duration `yaml:"fetch_timeout"`
}

// LoadConfig reads and parses a YAML config file. Unknown keys are errors: a typo must
// not silently fall back to a default.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("front config: %w", err)
	}
	return ParseConfig(data)
}

// ParseConfig parses YAML config data and fills in defaults.
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("front config: %w (see docs/front.md for the keys)", err)
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:993" // a front faces the Internet only when its config says so
	}
	if c.CRLStateFile == "" {
		c.CRLStateFile = DefaultCRLStateFile
	}
	return &c, nil
}

// Options loads every file the config names and returns front Options plus the CRL
// stores (which the caller runs). All problems are reported at once.
func (c *Config) Options(log *slog.Logger) (Options, error) {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	o := Options{
		Backend: BackendOptions{
			Address:      c.Backend.Address,
			TLS:          BackendTLS(c.Backend.TLS),
			DialTimeout:  c.Backend.DialTimeout,
			LoginTimeout: c.Backend.LoginTimeout,
		},
		HandshakeTimeout: c.Timeouts.Handshake,
		PreAuthTimeout:   c.Timeouts.PreAuth,
		PreAuthTotal:     c.Timeouts.PreAuthTotal,
		DrainTimeout:     c.Timeouts.Drain,
		MaxBadCommands:   c.Limits.MaxBadCommands,

		MaxLoginsPerConnection: c.Limits.MaxLoginsPerConnection,
		Limits: Limits{
			MaxConnections:           c.Limits.MaxConnections,
			MaxConnectionsPerIP:      c.Limits.MaxConnectionsPerIP,
			HandshakesPerIPPerMinute: c.Limits.HandshakesPerIPPerMinute,
			PreAuthShare:             c.Limits.PreAuthShare,
			MaxPlainCommands:         c.Limits.MaxPlainCommands,
		},
		Throttle: Throttle{
			BaseDelay:    c.Throttle.BaseDelay,
			MaxDelay:     c.Throttle.MaxDelay,
			LockoutAfter: c.Throttle.LockoutAfter,
			LockoutFor:   c.Throttle.LockoutFor,
			Window:       c.Throttle.Window,

			AddressLockoutCertificates: c.Throttle.AddressLockoutCertificates,
		},
		Logger: log,
	}
	add(c.Backend.loadTLS("backend", &o.Backend))
	add(c.pop3Options(&o))
	add(c.smtpOptions(&o))
	if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
		add(errors.New("front config: tls.cert_file and tls.key_file are required (the front's own server certificate)"))
	} else if cert, err := loadKeyPair(c.TLS.CertFile, c.TLS.KeyFile, "front config: tls.key_file"); err != nil {
		add(fmt.Errorf("front config: tls.cert_file/key_file: %w", err))
	} else {
		o.Certificates = []tls.Certificate{cert}
	}
	if c.TLS.ClientCAFile == "" {
		add(errors.New("front config: tls.client_ca_file is required (the root CA of user certificates, e.g. the CA's /roots.pem)"))
	} else if certs, err := readCerts(c.TLS.ClientCAFile); err != nil {
		add(fmt.Errorf("front config: tls.client_ca_file: %w", err))
	} else {
		o.ClientRoots = x509.NewCertPool()
		for _, ct := range certs {
			o.ClientRoots.AddCert(ct)
		}
	}
	if c.TLS.ClientIntermediatesFile != "" {
		if certs, err := readCerts(c.TLS.ClientIntermediatesFile); err != nil {
			add(fmt.Errorf("front config: tls.client_intermediates_file: %w", err))
		} else {
			o.ClientIntermediates = certs
		}
	}
	o.ResumptionMaxAge = c.TLS.ResumptionMaxAge
	if c.TLS.SessionTickets != nil && !*c.TLS.SessionTickets {
		o.DisableSessionTickets = true
	}
	if c.TLS.SessionTicketKeyFile != "" {
		keys, err := ReadTicketKeys(c.TLS.SessionTicketKeyFile)
		add(err)
		o.SessionTicketKeys = keys
	}
	if len(c.CRL) == 0 {
		add(errors.New("front config: crl: at least one CRL source is required (url: https://ca.example.org/crl, issuer_file: intermediate.pem)"))
	}
	for i, cc := range c.CRL {
		store, err := cc.store(log, c.CRLStateFile)
		if err != nil {
			add(fmt.Errorf("front config: crl[%d]: %w", i, err))
			continue
		}
		o.CRLs = append(o.CRLs, store)
	}
	if id, err := NewIdentityPolicy(IdentityMode(c.Identity.Mode), c.Identity.MapFile, c.Identity.Domains); err != nil {
		add(fmt.Errorf("front config: %w", err))
	} else {
		o.Identity = id
	}
	for _, n := range c.ProxyProtocol.TrustedNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			if a, aerr := netip.ParseAddr(n); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				add(fmt.Errorf("front config: proxy_protocol.trusted_networks: %q is neither an address nor a CIDR network", n))
				continue
			}
		}
		o.TrustedProxies = append(o.TrustedProxies, p.Masked())
	}
	for _, l := range []struct{ key, addr string }{{"listen", c.Listen}, {"starttls_listen", c.StartTLSListen}, {"metrics_listen", c.MetricsListen}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			add(fmt.Errorf("front config: %s %q: want host:port or :port", l.key, l.addr))
		}
	}
	// The settings are checked once, by the same code as New's, and reported
	// with the files that failed to load; what must be loaded was checked above,
	// key by key.
	add(o.checkSettings())
	if len(errs) > 0 {
		return Options{}, errors.Join(errs...)
	}
	return o, nil
}

// loadTLS loads the files of a backend section's TLS settings (key: its name in the
// file) into b.TLSConfig. Whether they fit its tls mode is checked by buildState.
func (bc BackendConfig) loadTLS(key string, b *BackendOptions) error {
	if bc.CAFile == "" && bc.ServerName == "" && bc.CertFile == "" && bc.KeyFile == "" {
		return nil
	}
	var errs []error
	cfg := &tls.Config{ServerName: bc.ServerName, MinVersion: tls.VersionTLS12}
	if bc.CAFile != "" {
		if roots, err := readCerts(bc.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("front config: %s.ca_file: %w", key, err))
		} else {
			cfg.RootCAs = x509.NewCertPool()
			for _, r := range roots {
				cfg.RootCAs.AddCert(r)
			}
		}
	}
	switch {
	case bc.CertFile == "" && bc.KeyFile == "":
	case bc.CertFile == "" || bc.KeyFile == "":
		errs = append(errs, fmt.Errorf("front config: %[1]s.cert_file and %[1]s.key_file go together (the front's client certificate for the backend)", key))
	default:
		cert, err := loadKeyPair(bc.CertFile, bc.KeyFile, "front config: "+key+".key_file")
		if err != nil {
			errs = append(errs, fmt.Errorf("front config: %s.cert_file/key_file: %w", key, err))
		} else {
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	b.TLSConfig = cfg
	return errors.Join(errs...)
}

func (cc CRLConfig) store(log *slog.Logger, stateFile string) (*crl.Store, error) {
	if cc.IssuerFile == "" {
		return nil, errors.New("issuer_file is required: the CA certificate that signs this CRL (the intermediate)")
	}
	issuers, err := readCerts(cc.IssuerFile)
	if err != nil {
		return nil, fmt.Errorf("issuer_file: %w", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	if cc.CAFile != "" {
		roots, err := readCerts(cc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return crl.NewStore(crl.Options{
		URL: cc.URL, File: cc.File, Issuer: issuers[0],
		Interval: cc.Interval, Grace: cc.Grace, MaxAge: cc.MaxAge,
		FetchTimeout: cc.FetchTimeout, StateFile: stateFile, HTTPClient: hc, Logger: log,
	})
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE found", path)
	}
	return out, nil
}

// loadKeyPair is tls.LoadX509KeyPair with the key file held to
// secretfile's rules.
func loadKeyPair(certFile, keyFile, what string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := secretfile.Read(keyFile, what)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(keyPEM)
	return tls.X509KeyPair(certPEM, keyPEM)
}

// ReadTicketKeys reads TLS session ticket keys shared by all fronts: one key a line, 64
// hex digits (32 bytes), the first is used to issue tickets and all to accept them, so
// that rotating means putting a new line first and dropping the last later. Create one
// with `openssl rand -hex 32`.
func ReadTicketKeys(path string) ([][32]byte, error) {
	// Whoever reads the ticket keys can mint tickets that claim any user's
	// certificate, smartcard or not.
	data, err := secretfile.Read(path, "front config: tls.session_ticket_key_file")
	if err != nil {
		return nil, err
	}
	defer clear(data)
	var keys [][32]byte
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("front config: tls.session_ticket_key_file %s line %d: want 64 hex digits (create one with: openssl rand -hex 32)", path, n+1)
		}
		keys = append(keys, [32]byte(b))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("front config: tls.session_ticket_key_file %s: no keys (create one with: openssl rand -hex 32)", path)
	}
	return keys, nil
}

// prepareStateDir creates the directory of crl_state_file (0700) if it is missing, so
// that the first CRL's number can be recorded.
func (c *Config) prepareStateDir() error {
	if err := os.MkdirAll(filepath.Dir(c.CRLStateFile), 0o700); err != nil {
		return fmt.Errorf("front config: crl_state_file %s: %w (set crl_state_file to a file in a directory the front may write)", c.CRLStateFile, err)
	}
	return nil
}
