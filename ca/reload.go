package ca

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
)

// SetLevelVar gives the server the log level a reload sets from log.level
// (ca serve's handler reads it). Without it log.level is not reloaded.
func (s *Server) SetLevelVar(v *slog.LevelVar) { s.level = v }

// reloadable are the ca.yaml keys a running CA takes on SIGHUP; fixed are
// the others, each with how to read it, for the refusal message.
var fixedKeys = []struct {
	key string
	get func(*Config) any
}{
	{"name", func(c *Config) any { return c.Name }},
	{"url", func(c *Config) any { return c.URL }},
	{"public_url", func(c *Config) any { return c.PublicURL }},
	{"db", func(c *Config) any { return c.DB }},
	{"keys", func(c *Config) any { return c.Keys }},
	{"certificates", func(c *Config) any { return c.Certificates }},
}

// ErrReloadRefused: the new configuration changes keys that take a restart;
// nothing of it was applied.
var ErrReloadRefused = errors.New("reload refused")

// Reload applies a new configuration to the running server: the listen
// addresses (listen, http_listen: new listeners are opened first, the old
// ones then drain), the CRL schedule (crl.*) and the log level (log.level,
// unless keepLevel: a --log-level flag wins). If next changes anything else
// (name, url, public_url, db, keys, certificates), nothing is applied and
// the error names the keys. It returns what changed.
func (s *Server) Reload(next *Config, keepLevel bool) ([]string, error) {
	cur := s.ca.cfg
	var fixed []string
	for _, k := range fixedKeys {
		if !reflect.DeepEqual(k.get(cur), k.get(next)) {
			fixed = append(fixed, k.key)
		}
	}
	if len(fixed) > 0 {
		return nil, fmt.Errorf("ca: %w: %s changed, which takes a restart of ca serve (nothing was applied; put the old values back and reload, or restart)",
			ErrReloadRefused, strings.Join(fixed, ", "))
	}
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("ca: %w: %v (nothing was applied)", ErrReloadRefused, err)
	}
	lvl, _ := next.Log.SlogLevel()

	s.lns.mu.Lock()
	defer s.lns.mu.Unlock()
	if s.lns.api == nil {
		return nil, fmt.Errorf("ca: %w: the server is not serving", ErrReloadRefused)
	}
	var changed []string
	// Open every new listener before touching anything, so a busy port
	// leaves the CA as it was.
	var apiLn, pubLn net.Listener
	if addr := next.ListenAddr(); addr != s.lns.apiAddr {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("ca: %w: listen %s: %v (nothing was applied)", ErrReloadRefused, addr, err)
		}
		apiLn = ln
	}
	if addr := next.HTTPListen; addr != s.lns.pubAddr && addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if apiLn != nil {
				apiLn.Close()
			}
			return nil, fmt.Errorf("ca: %w: listen %s (http_listen): %v (nothing was applied)", ErrReloadRefused, addr, err)
		}
		pubLn = ln
	}
	if next.CRL != s.ca.crlConfig() {
		if err := s.ca.SetCRLSchedule(next.CRL); err != nil {
			if apiLn != nil {
				apiLn.Close()
			}
			if pubLn != nil {
				pubLn.Close()
			}
			return nil, fmt.Errorf("ca: %w: %v", ErrReloadRefused, err)
		}
		changed = append(changed, "crl")
	}
	if apiLn != nil {
		s.retire(s.lns.api)
		s.lns.api, s.lns.apiAddr = s.startAPI(apiLn), next.ListenAddr()
		changed = append(changed, "listen "+apiLn.Addr().String())
	}
	if next.HTTPListen != s.lns.pubAddr {
		s.retire(s.lns.pub)
		s.lns.pub, s.lns.pubAddr = nil, ""
		if pubLn != nil {
			s.lns.pub, s.lns.pubAddr = s.startPublic(pubLn), next.HTTPListen
			changed = append(changed, "http_listen "+pubLn.Addr().String())
		} else {
			changed = append(changed, "http_listen off")
		}
	}
	// A revocation of this node's TLS certificate made on another node is
	// noticed here (and at start): a new one is issued.
	if cert := s.tlsCert.Load(); cert != nil {
		if rev, err := s.ca.IsRevoked(cert.Leaf); err == nil && rev {
			s.tlsRevoked(SerialHex(cert.Leaf.SerialNumber))
			changed = append(changed, "TLS certificate renewed (it was revoked)")
		}
	}
	if s.level != nil && !keepLevel && s.level.Level() != lvl {
		s.level.Set(lvl)
		changed = append(changed, "log.level "+lvl.String())
	}
	return changed, nil
}
