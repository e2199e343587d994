package enrollui

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// Config is the YAML file of `imapgate enroll-ui --config FILE`. Every key and
// its default is in docs/enroll-ui.md.
type Config struct {
	// Listen is host:port; anything but loopback needs TLS.
	Listen string `yaml:"listen"`
	// Hosts are more Host header values to accept besides Listen (a DNS
	// name in the TLS certificate, say). Nothing else is accepted.
	Hosts []string `yaml:"hosts"`
	// TLSCert and TLSKey serve the UI over HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Module is the PKCS#11 library of the card reader.
	Module string `yaml:"module"`
	// CAURL is the CA's HTTPS API; AgentCred the enrollment-agent credential
	// directory; AdminCred an admin credential that unlocks revocation.
	CAURL string `yaml:"ca_url"`
	// CAAddress, when set, is the host:port connected to instead of
	// ca_url's host; the CA's certificate is still checked for ca_url's host.
	CAAddress string `yaml:"ca_address"`
	AgentCred string `yaml:"agent_cred"`
	AdminCred string `yaml:"admin_cred"`
	// Operator names the person at the desk in audit lines when the access
	// token is used (default: the OS user).
	Operator string `yaml:"operator"`
	// Operators, when set, replace the access token with a name and
	// password login; passwords are bcrypt hashes.
	Operators []Operator `yaml:"operators"`
	// LinkFile, when set, receives the start-up access link too (0600),
	// for operators who may not read the process output; removed at stop.
	LinkFile string `yaml:"link_file"`
	// AuditLog is a file that receives one JSON line per action; empty: the
	// process log (stderr).
	AuditLog string `yaml:"audit_log"`
	// SessionTTL ends a session this long after login.
	SessionTTL Duration `yaml:"session_ttl"`
	// ScanInterval is how often the token list is re-read.
	ScanInterval Duration `yaml:"scan_interval"`
	// FrontCRLInterval is the fronts' CRL poll interval, to say when a
	// revocation takes effect.
	FrontCRLInterval Duration `yaml:"front_crl_interval"`
	// WriteCACerts stores the CA certificates on the token with the user's.
	WriteCACerts *bool `yaml:"write_ca_certs"`
	// ValidityDays is the requested certificate lifetime (0: the CA's).
	ValidityDays int `yaml:"validity_days"`
	// MinPINLen, DefaultPINs: the PIN policy (besides "not all one digit").
	MinPINLen   int      `yaml:"min_pin_len"`
	DefaultPINs []string `yaml:"default_pins"`
	// MailDomains, when set, are the only mailbox domains accepted.
	MailDomains []string `yaml:"mail_domains"`
	// ClientModule and RootsURL go on the receipt: the module the user
	// loads in Thunderbird and where the CA root is downloaded.
	ClientModule string `yaml:"client_module"`
	RootsURL     string `yaml:"roots_url"`
}

// Operator is one person allowed to log in with a password.
type Operator struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash"`
}

// Duration is a time.Duration written as "5s", "8h" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 5s or 8h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults.
const (
	DefaultListen = "127.0.0.1:8088"
)

// DefaultPINList is the default of default_pins: factory PINs of common
// cards and YubiKeys, and SoftHSM's example.
var DefaultPINList = []string{"123456", "12345678", "000000", "00000000", "1234", "0000"}

// LoadConfig reads the YAML file (unknown keys are errors) and fills defaults.
// It does not validate; call Validate.
func LoadConfig(path string) (*Config, error) {
	cfg := &Config{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("enroll-ui: config: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("enroll-ui: config %s: %w", path, err)
		}
	}
	cfg.fillDefaults()
	return cfg, nil
}

func (c *Config) fillDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = Duration(8 * time.Hour)
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = Duration(time.Second)
	}
	if c.FrontCRLInterval == 0 {
		c.FrontCRLInterval = Duration(5 * time.Second)
	}
	if c.WriteCACerts == nil {
		t := true
		c.WriteCACerts = &t
	}
	if c.MinPINLen == 0 {
		c.MinPINLen = 6
	}
	if c.DefaultPINs == nil {
		c.DefaultPINs = DefaultPINList
	}
	if c.Operator == "" {
		c.Operator = osUser()
	}
}

func osUser() string {
	for _, k := range []string{"USER", "LOGNAME"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return fmt.Sprintf("uid %d", os.Getuid())
}

// TLS says whether the UI is served over HTTPS.
func (c *Config) TLS() bool { return c.TLSCert != "" }

// Loopback says whether Listen is a loopback address.
func (c *Config) Loopback() bool {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// derive fills the defaults that follow other keys (after flags override
// them): client_module from module, roots_url from ca_url.
func (c *Config) derive() {
	if c.ClientModule == "" {
		c.ClientModule = c.Module
	}
	if c.RootsURL == "" && c.CAURL != "" {
		c.RootsURL = strings.TrimRight(c.CAURL, "/") + "/roots.pem"
	}
}

// Validate fills the derived defaults and reports every problem at once.
func (c *Config) Validate() error {
	c.derive()
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if host, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("listen %q: give host:port, e.g. %s", c.Listen, DefaultListen)
	} else {
		if !c.Loopback() && !c.TLS() {
			bad("listen %s is not a loopback address: set tls_cert and tls_key (PINs and the session cookie would cross the network in clear)", c.Listen)
		}
		if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && len(c.Hosts) == 0 {
			bad("listen %s names no address browsers can use in the Host header: list the names operators type in hosts", c.Listen)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_cert and tls_key go together")
	}
	for k, v := range map[string]string{"module": c.Module, "ca_url": c.CAURL, "agent_cred": c.AgentCred} {
		if v == "" {
			bad("%s is required", k)
		}
	}
	if c.CAURL != "" && !strings.HasPrefix(c.CAURL, "https://") {
		bad("ca_url %q must start with https://", c.CAURL)
	}
	if c.CAAddress != "" {
		if _, port, err := net.SplitHostPort(c.CAAddress); err != nil || port == "" {
			bad("ca_address %q must be host:port", c.CAAddress)
		}
	}
	for i, op := range c.Operators {
		if op.Name == "" {
			bad("operators[%d]: name is required", i)
		}
		if _, err := bcrypt.Cost([]byte(op.PasswordHash)); err != nil {
			bad("operators[%d] (%s): password_hash is not a bcrypt hash: make one with imapgate enroll-ui hash-password", i, op.Name)
		}
	}
	if c.MinPINLen < 4 {
		bad("min_pin_len %d: at least 4", c.MinPINLen)
	}
	if c.SessionTTL.D() < time.Minute {
		bad("session_ttl %s: at least 1m", c.SessionTTL.D())
	}
	if c.ScanInterval.D() <= 0 || c.ScanInterval.D() > 1500*time.Millisecond {
		// The open page polls every 0.5 s on top: a token must show within two seconds.
		bad("scan_interval %s: between 1ms and 1.5s (a token must show within two seconds; the page polls every 0.5s on top)", c.ScanInterval.D())
	}
	if c.ValidityDays < 0 {
		bad("validity_days %d: 0 (the CA's default) or more", c.ValidityDays)
	}
	if len(errs) > 0 {
		return fmt.Errorf("enroll-ui: config: %w", errors.Join(errs...))
	}
	return nil
}

// HashPassword makes an operators[].password_hash value.
func HashPassword(pw string) (string, error) {
	if len(pw) < 10 {
		return "", errors.New("enroll-ui: an operator password needs at least 10 characters")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), 12)
	return string(h), err
}
