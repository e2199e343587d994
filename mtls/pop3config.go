package mtls

import (
	"errors"
	"fmt"
	"net"
)

// POP3Config is the pop3 section of the front's file: where the POP3 gate listens
// and its backend. TLS, CRLs, identity, timeouts, limits and throttle are the file's
// shared sections. Without a listen address the POP3 gate is off.
type POP3Config struct {
	Listen     string        `yaml:"listen"`      // implicit TLS, e.g. ":995"
	STLSListen string        `yaml:"stls_listen"` // plain POP3 with STLS, e.g. ":110"
	Backend    BackendConfig `yaml:"backend"`
}

func (p *POP3Config) on() bool { return p.Listen != "" || p.STLSListen != "" }

// pop3Options fills o.POP3 from the pop3 section.
func (c *Config) pop3Options(o *Options) error {
	p := c.POP3
	if !p.on() {
		if p.Backend.Address != "" {
			return errors.New("front config: pop3.backend is set but neither pop3.listen nor pop3.stls_listen: set one (e.g. pop3.listen: \":995\") or drop the pop3 section")
		}
		return nil
	}
	var errs []error
	for _, l := range []struct{ key, addr string }{{"pop3.listen", p.Listen}, {"pop3.stls_listen", p.STLSListen}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			errs = append(errs, fmt.Errorf("front config: %s %q: want host:port or :port", l.key, l.addr))
		}
	}
	if p.Backend.Address == "" {
		errs = append(errs, errors.New("front config: pop3.backend.address is required with a pop3 listener: the POP3 server's host:port (e.g. 127.0.0.1:110)"))
	}
	o.POP3.Backend = BackendOptions{
		Address:      p.Backend.Address,
		TLS:          BackendTLS(p.Backend.TLS),
		DialTimeout:  p.Backend.DialTimeout,
		LoginTimeout: p.Backend.LoginTimeout,
	}
	errs = append(errs, p.Backend.loadTLS("pop3.backend", &o.POP3.Backend))
	return errors.Join(errs...)
}

// pop3Endpoints are the POP3 listeners opened for a configuration.
type pop3Endpoints map[Mode]net.Listener

func (e pop3Endpoints) close() {
	for _, ln := range e {
		ln.Close()
	}
}

// openPOP3 binds the POP3 addresses of next that differ from those of cur (all of
// them when cur is nil); on a failure it closes what it opened.
func openPOP3(cur, next *Config) (pop3Endpoints, error) {
	var old POP3Config
	if cur != nil {
		old = cur.POP3
	}
	e := pop3Endpoints{}
	for _, b := range []struct {
		mode     Mode
		old, new string
	}{{ImplicitTLS, old.Listen, next.POP3.Listen}, {StartTLS, old.STLSListen, next.POP3.STLSListen}} {
		if b.new == "" || (cur != nil && b.old == b.new) {
			continue
		}
		ln, err := net.Listen("tcp", b.new)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("front: POP3 listen on %s: %w (is another server on that port?)", b.new, err)
		}
		e[b.mode] = ln
	}
	return e, nil
}

// usePOP3 serves the POP3 listeners opened for cfg: one that moved is served on the
// new address and the old one closes (its sessions go on); a removed one closes.
func (r *runner) usePOP3(eps pop3Endpoints, cfg *Config) {
	if r.pop3 == nil {
		r.pop3 = map[Mode]net.Listener{}
	}
	for mode, addr := range map[Mode]string{ImplicitTLS: cfg.POP3.Listen, StartTLS: cfg.POP3.STLSListen} {
		if ln := eps[mode]; ln != nil {
			if old := r.pop3[mode]; old != nil {
				old.Close()
			}
			r.pop3[mode] = ln
			r.log.Info("POP3 gate listening", "addr", ln.Addr().String(), "stls", mode == StartTLS)
			go func() { r.errc <- r.srv.ServePOP3(r.runCtx, ln, mode) }()
		} else if addr == "" && r.pop3[mode] != nil {
			r.pop3[mode].Close()
			delete(r.pop3, mode)
		}
	}
}
