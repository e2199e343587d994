package enrollui

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfig loads every testdata/*.yaml: good_… must load and validate,
// fail_… must be refused with a message.
func TestConfig(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no config fixtures: %v", err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			cfg, err := LoadConfig(f)
			if err == nil {
				err = cfg.Validate()
			}
			switch {
			case strings.HasPrefix(name, "good_") && err != nil:
				t.Fatalf("refused: %v", err)
			case strings.HasPrefix(name, "fail_") && err == nil:
				t.Fatal("accepted")
			case strings.HasPrefix(name, "fail_"):
				t.Logf("refused as it should be: %v", err)
			}
		})
	}
}

// TestConfigDefaults: the defaults docs/enroll-ui.md lists.
func TestConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig("testdata/good_minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]bool{
		"listen":             cfg.Listen == "127.0.0.1:8088",
		"session_ttl":        cfg.SessionTTL.D() == 8*time.Hour,
		"scan_interval":      cfg.ScanInterval.D() == time.Second,
		"front_crl_interval": cfg.FrontCRLInterval.D() == 5*time.Second,
		"write_ca_certs":     *cfg.WriteCACerts,
		"min_pin_len":        cfg.MinPINLen == 6,
		"default_pins":       len(cfg.DefaultPINs) == 6,
		"client_module":      cfg.ClientModule == cfg.Module,
		"roots_url":          cfg.RootsURL == "https://ca.example.org:8443/roots.pem",
		"loopback":           cfg.Loopback() && !cfg.TLS(),
	}
	for k, ok := range checks {
		if !ok {
			t.Errorf("default of %s is not the documented one: %+v", k, cfg)
		}
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := LoadConfig(empty); err != nil {
		t.Errorf("an empty file (flags give everything): %v", err)
	}
}

// TestPINPolicy: the policy each new PIN goes through.
func TestPINPolicy(t *testing.T) {
	s := &Server{cfg: &Config{MinPINLen: 6, DefaultPINs: DefaultPINList}}
	for _, tc := range []struct{ pin, again, want string }{
		{"735194", "735194", ""},
		{"abcdef", "abcdef", ""},
		{"aaaaaa", "aaaaaa", ""}, // letters repeated are not "one digit"
		{"", "", "both fields"},
		{"735194", "735195", "differ"},
		{"73519", "73519", "at least 6"},
		{"000000", "000000", "one digit"},
		{"12345678", "12345678", "factory default"},
		{"123456", "123456", "factory default"},
	} {
		err := s.checkNewPIN(tc.pin, tc.again)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkNewPIN(%q, %q) = %v, want %q", tc.pin, tc.again, err, tc.want)
		}
		if err != nil && tc.pin != "" && strings.Contains(err.Error(), tc.pin) {
			t.Errorf("the message repeats the PIN: %v", err)
		}
	}
}

// TestSessionLimit: strangers cannot fill the session store, and cannot
// push out a logged-in session.
func TestSessionLimit(t *testing.T) {
	st := newSessions(time.Hour)
	op := st.login(nil, "maria")
	for i := 0; i < 3*maxSessions; i++ {
		st.create()
	}
	if n := len(st.m); n > maxSessions+1 {
		t.Fatalf("%d sessions stored, limit %d", n, maxSessions)
	}
	if st.get(op.id) == nil {
		t.Fatal("the logged-in session was dropped for strangers'")
	}
}
