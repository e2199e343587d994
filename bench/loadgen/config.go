package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Mode is what one operation of a worker does.
type Mode string

// The modes.
const (
	Full    Mode = "full"    // a full TLS handshake (no ticket asked for, unless Tickets), then the greeting
	Resumed Mode = "resumed" // a TLS 1.3 resumption with the worker's last ticket, then the greeting
	Login   Mode = "login"   // handshake, greeting, LOGIN, tagged OK, LOGOUT
	Idle    Mode = "idle"    // open Sessions sessions in IDLE, then measure the server's PSS
)

// Config is one load run.
type Config struct {
	Addr        string        // host:port of the server (loopback)
	ServerName  string        // name to verify in the server certificate
	Mode        Mode          //
	Proto       Proto         // imap (default), pop3 or smtp: the dialect after the handshake
	Rate        float64       // if > 0, start operations at this rate (open loop), at most Concurrency at once
	Concurrency int           // workers (idle: sessions opened at once)
	Duration    time.Duration // measured time (not idle)
	Warmup      time.Duration // time before measuring (not counted)
	CertFile    string        // client certificate chain (PEM)
	KeyFile     string        // its key (PEM, EC or RSA)
	CAFile      string        // roots for the server certificate (PEM)
	Curve       string        // X25519, X25519MLKEM768, P256 or "" (Go's default list)
	MaxVersion  string        // "1.3" (default) or "1.2"
	Tickets     bool          // full: ask for session tickets, never resume (a mail client's first connection)
	User        string        // login name (login, idle)
	Password    string        // its password
	Sessions    int           // idle: how many sessions
	Hold        time.Duration // idle: how long to let the server settle before reading PSS
	PIDs        []int         // server processes: their PSS (idle) or CPU time per operation (other modes)
	Children    bool          // add the child processes of PIDs
	Label       string        // free text copied to the result
	VerifyEvery bool          // verify the server's chain on every handshake, not once per chain
}

// curves maps the --curve names to Go's identifiers.
var curves = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"X25519MLKEM768": tls.X25519MLKEM768,
	"P256":           tls.CurveP256,
}

// tlsConfig builds the client side from c.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return nil, errors.New("loadgen: give --cert, --key and --ca (the client certificate, its key, and the roots of the server certificate)")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loadgen: client certificate: %w", err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("loadgen: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("loadgen: CA file %s holds no PEM certificate", c.CAFile)
	}
	cfg := &tls.Config{
		ServerName:   c.ServerName,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS13,
	}
	switch c.MaxVersion {
	case "", "1.3":
	case "1.2":
		cfg.MaxVersion = tls.VersionTLS12
	default:
		return nil, fmt.Errorf("loadgen: --tls %q: want 1.2 or 1.3", c.MaxVersion)
	}
	if c.Curve != "" {
		id, ok := curves[c.Curve]
		if !ok {
			return nil, fmt.Errorf("loadgen: --curve %q: want one of X25519, X25519MLKEM768, P256", c.Curve)
		}
		cfg.CurvePreferences = []tls.CurveID{id}
	}
	if !c.VerifyEvery {
		(&chainCache{}).install(cfg)
	}
	if c.Mode == Resumed {
		if cfg.MaxVersion != tls.VersionTLS13 {
			return nil, errors.New("loadgen: resumed mode measures TLS 1.3 tickets: use --tls 1.3")
		}
	} else if c.Tickets && c.Mode == Full {
		// The server makes and sends a ticket on every handshake, as for a real
		// client, which a client without a cache never asks for.
		cfg.ClientSessionCache = forgetfulCache{}
	} else {
		cfg.SessionTicketsDisabled = true
	}
	return cfg, nil
}

// forgetfulCache asks for session tickets and never offers one back.
type forgetfulCache struct{}

func (forgetfulCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (forgetfulCache) Put(string, *tls.ClientSessionState)        {}

func (c *Config) check() error {
	switch c.Mode {
	case Full, Resumed, Login, Idle:
	default:
		return fmt.Errorf("loadgen: --mode %q: want full, resumed, login or idle", c.Mode)
	}
	switch c.Proto {
	case "", IMAP:
	case POP3, SMTP:
		if c.Mode == Idle {
			return fmt.Errorf("loadgen: --mode idle measures IMAP IDLE sessions; --proto %s has no IDLE", c.Proto)
		}
	default:
		return fmt.Errorf("loadgen: --proto %q: want imap, pop3 or smtp", c.Proto)
	}
	if c.Rate < 0 || (c.Rate > 0 && c.Mode == Idle) {
		return errors.New("loadgen: --rate must be positive, and idle mode opens sessions as fast as it can (no --rate)")
	}
	if !strings.HasPrefix(c.Addr, "127.") && !strings.HasPrefix(c.Addr, "[::1]") && !strings.HasPrefix(c.Addr, "localhost:") {
		return fmt.Errorf("loadgen: --addr %q: the load generator only targets loopback (127.0.0.0/8, [::1])", c.Addr)
	}
	if c.Concurrency < 1 {
		return errors.New("loadgen: --concurrency must be at least 1")
	}
	if (c.Mode == Login || c.Mode == Idle) && (c.User == "" || c.Password == "") {
		return errors.New("loadgen: login and idle modes need --user and --password")
	}
	if c.Mode == Idle && c.Sessions < 1 {
		return errors.New("loadgen: idle mode needs --sessions")
	}
	if c.Mode != Idle && c.Duration <= 0 {
		return errors.New("loadgen: --duration must be positive")
	}
	return nil
}
