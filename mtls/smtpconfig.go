package mtls

import "fmt"

// SMTPConfig is the smtp section of the front's file: where the SMTP submission gate
// listens, its name and SIZE, and its backend. TLS, CRLs, identity, timeouts, limits
// and throttle are the file's shared sections. Without a listen address the SMTP gate
// is off.
type SMTPConfig struct {
	Listen         string        `yaml:"listen"`          // implicit TLS, e.g. ":465"
	StartTLSListen string        `yaml:"starttls_listen"` // plain SMTP with STARTTLS, e.g. ":587"
	Hostname       string        `yaml:"hostname"`
	MaxMessageSize int64         `yaml:"max_message_size"`
	Backend        BackendConfig `yaml:"backend"`
}

func (s *SMTPConfig) addrs() gateAddrs { return gateAddrs{s.Listen, s.StartTLSListen} }

// smtpOptions fills o.SMTP from the smtp section.
func (c *Config) smtpOptions(o *Options) error {
	p := c.SMTP
	if p.MaxMessageSize < 0 {
		return fmt.Errorf("front config: smtp.max_message_size %d: want a size in bytes (default %d)", p.MaxMessageSize, DefaultSMTPMaxMessageSize)
	}
	o.SMTP.Hostname, o.SMTP.MaxMessageSize = p.Hostname, p.MaxMessageSize
	return gateOptions("smtp", [2]string{"listen", "starttls_listen"}, p.addrs(), &p.Backend, "submission server's host:port (e.g. 127.0.0.1:587)", &o.SMTP.Backend)
}

// openSMTP binds the SMTP addresses of next that differ from those of cur (all of
// them when cur is nil); on a failure it closes what it opened.
func openSMTP(cur, next *Config) (gateEndpoints, error) {
	var old gateAddrs
	if cur != nil {
		old = cur.SMTP.addrs()
	}
	return openGate("SMTP", cur == nil, old, next.SMTP.addrs())
}

// useSMTP serves the SMTP listeners opened for cfg (useGate).
func (r *runner) useSMTP(eps gateEndpoints, cfg *Config) {
	r.useGate("SMTP", "starttls", &r.smtp, eps, cfg.SMTP.addrs(), r.srv.ServeSMTP)
}
