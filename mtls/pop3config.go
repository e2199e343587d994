package mtls

import (
	"context"
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

// pop3Options fills o.POP3 from the pop3 section.
func (c *Config) pop3Options(o *Options) error {
	p := c.POP3
	return gateOptions("pop3", [2]string{"listen", "stls_listen"}, gateAddrs{p.Listen, p.STLSListen}, &p.Backend, "POP3 server's host:port (e.g. 127.0.0.1:110)", &o.POP3.Backend)
}

// gateOptions checks the listen addresses (keys) and the backend of one more
// protocol's section (pop3, smtp) and fills dst. Without a listen address the gate is
// off and its backend must not be set.
func gateOptions(section string, keys [2]string, addrs gateAddrs, b *BackendConfig, what string, dst *BackendOptions) error {
	if addrs.implicit == "" && addrs.starttls == "" {
		if b.Address != "" {
			return fmt.Errorf("front config: %[1]s.backend is set but neither %[1]s.%[2]s nor %[1]s.%[3]s: set one or drop the %[1]s section", section, keys[0], keys[1])
		}
		return nil
	}
	var errs []error
	for i, addr := range []string{addrs.implicit, addrs.starttls} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("front config: %s.%s %q: want host:port or :port", section, keys[i], addr))
		}
	}
	if b.Address == "" {
		errs = append(errs, fmt.Errorf("front config: %s.backend.address is required with a %s listener: the %s", section, section, what))
	}
	*dst = BackendOptions{
		Address:      b.Address,
		TLS:          BackendTLS(b.TLS),
		DialTimeout:  b.DialTimeout,
		LoginTimeout: b.LoginTimeout,
	}
	errs = append(errs, b.loadTLS(section+".backend", dst))
	return errors.Join(errs...)
}

// openPOP3 binds the POP3 addresses of next that differ from those of cur (all of
// them when cur is nil); on a failure it closes what it opened.
func openPOP3(cur, next *Config) (gateEndpoints, error) {
	var old gateAddrs
	if cur != nil {
		old = gateAddrs{cur.POP3.Listen, cur.POP3.STLSListen}
	}
	return openGate("POP3", cur == nil, old, gateAddrs{next.POP3.Listen, next.POP3.STLSListen})
}

// usePOP3 serves the POP3 listeners opened for cfg (useGate).
func (r *runner) usePOP3(eps gateEndpoints, cfg *Config) {
	r.useGate("POP3", "stls", &r.pop3, eps, gateAddrs{cfg.POP3.Listen, cfg.POP3.STLSListen}, r.srv.ServePOP3)
}

// gateAddrs are the listen addresses of one more protocol's gate (POP3, SMTP):
// implicit TLS and STARTTLS (STLS).
type gateAddrs struct{ implicit, starttls string }

func (a gateAddrs) of(m Mode) string {
	if m == StartTLS {
		return a.starttls
	}
	return a.implicit
}

// gateEndpoints are the listeners opened for one protocol's gate.
type gateEndpoints map[Mode]net.Listener

func (e gateEndpoints) close() {
	for _, ln := range e {
		ln.Close()
	}
}

// openGate binds the addresses of next that differ from old (all of them when all);
// on a failure it closes what it opened.
func openGate(proto string, all bool, old, next gateAddrs) (gateEndpoints, error) {
	e := gateEndpoints{}
	for _, mode := range []Mode{ImplicitTLS, StartTLS} {
		addr := next.of(mode)
		if addr == "" || (!all && old.of(mode) == addr) {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("front: %s listen on %s: %w (is another server on that port?)", proto, addr, err)
		}
		e[mode] = ln
	}
	return e, nil
}

// useGate serves the listeners opened for a protocol's gate: one that moved is served
// on the new address and the old one closes (its sessions go on); a removed one
// closes. lns holds the protocol's running listeners.
func (r *runner) useGate(proto, starttlsKey string, lns *map[Mode]net.Listener, eps gateEndpoints, addrs gateAddrs,
	serve func(context.Context, net.Listener, Mode) error) {
	if *lns == nil {
		*lns = map[Mode]net.Listener{}
	}
	for _, mode := range []Mode{ImplicitTLS, StartTLS} {
		if ln := eps[mode]; ln != nil {
			if old := (*lns)[mode]; old != nil {
				old.Close()
			}
			(*lns)[mode] = ln
			r.log.Info(proto+" gate listening", "addr", ln.Addr().String(), starttlsKey, mode == StartTLS)
			go func() { r.errc <- serve(r.runCtx, ln, mode) }()
		} else if addrs.of(mode) == "" && (*lns)[mode] != nil {
			(*lns)[mode].Close()
			delete(*lns, mode)
		}
	}
}
