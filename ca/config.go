package ca

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imapgate/imapgate/secretfile"
)

// ConfigFile is the name of the CA's configuration file inside its directory.
const ConfigFile = "ca.yaml"

// Files inside a CA directory. Key files are written 0600.
const (
	RootCertFile         = "root_ca.crt"
	RootKeyFile          = "root_ca_key.pem"
	IntermediateCertFile = "intermediate_ca.crt"
	IntermediateKeyFile  = "intermediate_ca_key.pem"
	TLSCertFile          = "tls.crt"
	TLSKeyFile           = "tls_key.pem"
	DBFile               = "ca.db"
	AdminDir             = "admin"
)

// Config is the CA's configuration (DIR/ca.yaml). Every key and its default is
// documented in docs/ca.md. Relative paths are relative to the CA directory.
type Config struct {
	// Name is the organisation name in the CA certificates' subjects.
	Name string `yaml:"name"`
	// URL is the HTTPS base URL clients use to reach the API, e.g. https://ca.example.org:8443.
	URL string `yaml:"url"`
	// PublicURL is the base URL written into certificates for the CRL distribution
	// point (PublicURL/crl) and AIA caIssuers (PublicURL/intermediate.crt). Default: URL.
	// Relying parties usually expect plain HTTP here: set it to the http_listen address.
	PublicURL string `yaml:"public_url"`
	// Listen is the HTTPS listen address. Default: the port of URL on all interfaces.
	Listen string `yaml:"listen"`
	// HTTPListen is an optional plain-HTTP listener serving only the public paths
	// (/crl, /crl.pem, /roots.pem, /intermediate.pem, /intermediate.crt, /healthz).
	HTTPListen string `yaml:"http_listen"`

	// DB is the certificate database.
	DB DBConfig `yaml:"db"`

	// Keys says where the CA keys live and how they are protected.
	Keys KeysConfig `yaml:"keys"`

	// Certificates holds the issuance profile.
	Certificates CertConfig `yaml:"certificates"`

	// CRL holds the revocation list schedule.
	CRL CRLConfig `yaml:"crl"`

	// Log is the log output of ca serve.
	Log LogConfig `yaml:"log"`

	// dir is the CA directory the config was loaded from.
	dir string
}

// DBConfig selects smallstep's nosql backend.
type DBConfig struct {
	// Type is bbolt (default, one file, one process) or postgresql (several CA nodes).
	Type string `yaml:"type"`
	// DataSource is the bbolt file (default DIR/ca.db) or a PostgreSQL DSN.
	DataSource string `yaml:"data_source"`
	// Database is the PostgreSQL database name when the DSN names none; it is created if missing.
	Database string `yaml:"database"`
}

// KeysConfig says how the CA's private keys are protected.
type KeysConfig struct {
	// PasswordFile holds the password that encrypts the key files. Default: none,
	// then the IMAPGATE_CA_PASSWORD environment variable is used.
	PasswordFile string `yaml:"password_file"`
	// KMS is a PKCS#11 KMS URI (pkcs11:module-path=…;token=…?pin-source=…). When set,
	// IntermediateKey is a key URI inside it rather than a file.
	KMS string `yaml:"kms"`
	// IntermediateKey is the intermediate's key: a file (default intermediate_ca_key.pem)
	// or, with KMS, a pkcs11:id=…;object=… URI.
	IntermediateKey string `yaml:"intermediate_key"`
}

// CertConfig is the issuance profile.
type CertConfig struct {
	// UserValidity is the default lifetime of a user certificate. Default 8760h (365 days).
	UserValidity Duration `yaml:"user_validity"`
	// MaxUserValidity caps a requested lifetime. Default 17520h (2 years).
	MaxUserValidity Duration `yaml:"max_user_validity"`
	// RoleValidity is the lifetime of an enrollment-agent or admin certificate. Default 8760h.
	RoleValidity Duration `yaml:"role_validity"`
	// ServerValidity is the default lifetime of a TLS server certificate
	// (POST /api/v1/server, imapgate cert server). Default 2160h (90 days).
	ServerValidity Duration `yaml:"server_validity"`
	// MaxServerValidity caps a requested server lifetime. Default 9528h (397 days).
	MaxServerValidity Duration `yaml:"max_server_validity"`
	// AllowedDomains, when not empty, limits mailbox identities to these domains.
	AllowedDomains []string `yaml:"allowed_domains"`
}

// CRLConfig is the CRL schedule.
type CRLConfig struct {
	// Validity is nextUpdate − thisUpdate. Default 24h.
	Validity Duration `yaml:"validity"`
	// RenewPeriod is how often the CRL is re-signed even without a revocation.
	// Default 8h, a third of Validity; at most three quarters of Validity.
	RenewPeriod Duration `yaml:"renew_period"`
	// CheckInterval is how often every node looks whether the stored CRL misses
	// a revocation (its own signing failed) or has reached RenewPeriod. Default 15s.
	CheckInterval Duration `yaml:"check_interval"`
}

// LogConfig is the log output of ca serve (JSON lines on stderr).
type LogConfig struct {
	// Level is debug, info, warn or error. Default info; --log-level overrides it.
	Level string `yaml:"level"`
}

// SlogLevel is Level as a slog.Level.
func (l LogConfig) SlogLevel() (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return 0, fmt.Errorf("log.level %q: use debug, info, warn or error", l.Level)
	}
	return lvl, nil
}

// Duration is a time.Duration that reads and writes as "24h" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 24h or 90m", n.Line, s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.Duration.String(), nil }

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() *Config {
	return &Config{
		DB:   DBConfig{Type: "bbolt", DataSource: DBFile},
		Keys: KeysConfig{IntermediateKey: IntermediateKeyFile},
		Certificates: CertConfig{
			UserValidity:      Duration{365 * 24 * time.Hour},
			MaxUserValidity:   Duration{2 * 365 * 24 * time.Hour},
			RoleValidity:      Duration{365 * 24 * time.Hour},
			ServerValidity:    Duration{90 * 24 * time.Hour},
			MaxServerValidity: Duration{397 * 24 * time.Hour},
		},
		CRL: CRLConfig{
			Validity:      Duration{24 * time.Hour},
			RenewPeriod:   Duration{8 * time.Hour},
			CheckInterval: Duration{15 * time.Second},
		},
		Log: LogConfig{Level: "info"},
	}
}

// LoadConfig reads DIR/ca.yaml, fills defaults and validates it.
func LoadConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ca: no CA in %s: create one with 'imapgate ca init --dir %s'", dir, dir)
		}
		return nil, fmt.Errorf("ca: read config: %w", err)
	}
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("ca: parse %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	cfg.dir = dir
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Validate checks the whole configuration and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Name) == "" {
		errs = append(errs, errors.New("name is empty: set the organisation name"))
	}
	if _, err := c.apiURL(); err != nil {
		errs = append(errs, err)
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("public_url %q is not an http(s) URL", c.PublicURL))
		}
	}
	switch c.DB.Type {
	case "bbolt", "postgresql":
	default:
		errs = append(errs, fmt.Errorf("db.type %q: use bbolt or postgresql", c.DB.Type))
	}
	if c.DB.DataSource == "" {
		errs = append(errs, errors.New("db.data_source is empty"))
	}
	if c.Certificates.UserValidity.Duration <= 0 || c.Certificates.UserValidity.Duration > c.Certificates.MaxUserValidity.Duration {
		errs = append(errs, fmt.Errorf("certificates.user_validity %s must be positive and at most max_user_validity %s",
			c.Certificates.UserValidity.Duration, c.Certificates.MaxUserValidity.Duration))
	}
	if v, m := c.Certificates.ServerValidity.Duration, c.Certificates.MaxServerValidity.Duration; v < time.Hour || v > m {
		errs = append(errs, fmt.Errorf("certificates.server_validity %s must be at least 1h and at most max_server_validity %s (default 2160h, 90 days)", v, m))
	}
	if c.Certificates.RoleValidity.Duration <= 0 {
		errs = append(errs, errors.New("certificates.role_validity must be positive"))
	}
	if c.CRL.Validity.Duration < time.Minute {
		errs = append(errs, fmt.Errorf("crl.validity %s is under a minute", c.CRL.Validity.Duration))
	}
	// The schedule looks every min(check_interval, renew_period/4), so a renewal
	// can come up to a quarter period late: 0.75 × 1.25 < 1 keeps it before nextUpdate.
	switch renew, validity := c.CRL.RenewPeriod.Duration, c.CRL.Validity.Duration; {
	case renew <= 0:
		errs = append(errs, fmt.Errorf("crl.renew_period %s must be positive", renew))
	case renew > validity/4*3:
		errs = append(errs, fmt.Errorf("crl.renew_period %s must be at most three quarters of crl.validity %s (%s), so the CRL is re-signed before its nextUpdate even when the renewal comes late",
			renew, validity, validity/4*3))
	}
	if c.CRL.CheckInterval.Duration <= 0 {
		errs = append(errs, fmt.Errorf("crl.check_interval %s must be positive (default 15s)", c.CRL.CheckInterval.Duration))
	}
	if _, err := c.Log.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	for _, d := range c.Certificates.AllowedDomains {
		if d == "" || strings.ContainsAny(d, "@ ") {
			errs = append(errs, fmt.Errorf("certificates.allowed_domains: %q is not a domain", d))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ca: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func (c *Config) apiURL() (*url.URL, error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("url %q must be an https URL such as https://ca.example.org:8443", c.URL)
	}
	return u, nil
}

// Dir is the CA directory.
func (c *Config) Dir() string { return c.dir }

// path resolves p against the CA directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// ListenAddr is the HTTPS listen address: Listen, or the URL's port on all interfaces.
func (c *Config) ListenAddr() string {
	if c.Listen != "" {
		return c.Listen
	}
	u, err := c.apiURL()
	if err != nil {
		return ":8443"
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort("", port)
}

// publicBase is the base URL written into certificates.
func (c *Config) publicBase() string {
	base := c.PublicURL
	if base == "" {
		base = c.URL
	}
	return strings.TrimRight(base, "/")
}

// CRLURL is the CRL distribution point written into every certificate and into
// the CRL's Issuing Distribution Point; the two must be equal for OpenSSL.
func (c *Config) CRLURL() string { return c.publicBase() + "/crl" }

// IssuerURL is the AIA caIssuers URL (the intermediate certificate, DER).
func (c *Config) IssuerURL() string { return c.publicBase() + "/intermediate.crt" }

// password returns the key-encryption password from the file or the environment.
func (c *Config) password() ([]byte, error) {
	return readPassword(c.path(c.Keys.PasswordFile))
}

// PasswordEnv is the environment variable that holds the key password when no file is given.
const PasswordEnv = "IMAPGATE_CA_PASSWORD"

func readPassword(file string) ([]byte, error) {
	if file != "" {
		b, err := secretfile.Read(file, "ca: key password file")
		if err != nil {
			return nil, err
		}
		defer clear(b)
		pw := bytes.Clone(bytes.TrimRight(b, "\r\n"))
		if len(pw) == 0 {
			return nil, fmt.Errorf("ca: key password file %s is empty", file)
		}
		return pw, nil
	}
	if v := os.Getenv(PasswordEnv); v != "" {
		return []byte(v), nil
	}
	return nil, fmt.Errorf("ca: no key password: give --password-file or set %s", PasswordEnv)
}

func (c *Config) marshal() ([]byte, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte("# imapgate CA configuration. Every key is documented in docs/ca.md.\n"), b...), nil
}
