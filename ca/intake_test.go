package ca

import (
	"bytes"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNormalizeIdentity(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice@example.org", "alice@example.org", true},
		{"Alice@EXAMPLE.org", "Alice@example.org", true}, // the local part is the server's business
		{"a.b+tag@mail.example.org", "a.b+tag@mail.example.org", true},
		{"alice", "", false},
		{"", "", false},
		{"alice@", "", false},
		{"@example.org", "", false},
		{"Alice <alice@example.org>", "", false},
		{"alice@example.org\r\nBcc: x", "", false},
		{"alice@exämple.org", "", false},
		{"alice@nodot", "", false},
		{strings.Repeat("a", 250) + "@example.org", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeIdentity(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NormalizeIdentity(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("NormalizeIdentity(%q): error is not a bad request: %v", tt.in, err)
		}
	}
}

func TestParseSerialRoundTrip(t *testing.T) {
	for _, s := range []string{"01", "A1DEF04CA7B0212CDCE3D0DBEB767EF4", "a1:de:f0:4c", "0x3F2A"} {
		n, err := ParseSerial(s)
		if err != nil {
			t.Fatalf("ParseSerial(%q): %v", s, err)
		}
		m, _ := ParseSerial(SerialHex(n))
		if n.Cmp(m) != 0 {
			t.Errorf("%q does not round-trip through SerialHex", s)
		}
	}
	if SerialHex(big.NewInt(0xabc)) != "0ABC" {
		t.Errorf("SerialHex pads to an even length like openssl: got %s", SerialHex(big.NewInt(0xabc)))
	}
	for _, s := range []string{"", "xyz", "-1", "0", strings.Repeat("f", 65)} {
		if _, err := ParseSerial(s); err == nil {
			t.Errorf("ParseSerial(%q) accepted", s)
		}
	}
}

func TestParseReason(t *testing.T) {
	for name, code := range map[string]int{"keyCompromise": 1, "KEYCOMPROMISE": 1, "superseded": 4, "": 0, "privilegeWithdrawn": 9} {
		if got, err := ParseReason(name); err != nil || got != code {
			t.Errorf("ParseReason(%q) = %d, %v; want %d", name, got, err, code)
		}
	}
	for _, bad := range []string{"certificateHold", "removeFromCRL", "lost", "cACompromise"} {
		if _, err := ParseReason(bad); err == nil {
			t.Errorf("ParseReason(%q) accepted; revocation here is final and per-user", bad)
		}
	}
}

// Fixtures in testdata/intake: good_*.json must pass the intake and the policy
// checks, fail_*.json must be refused as a bad request. Adding a case is adding a file.
func TestIntakeFixtures(t *testing.T) { runFixtures(t, "intake", intake) }

func intake(body []byte) error {
	req, err := parseSignRequest(bytes.NewReader(body))
	if err != nil {
		return err
	}
	_, _, err = checkSignRequest(req)
	return err
}

// FuzzSignIntake: whatever the body, the intake never panics and refuses only
// with a bad-request error (never an internal one).
func FuzzSignIntake(f *testing.F) {
	files, _ := filepath.Glob("testdata/intake/*.json")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	f.Add([]byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMII\n-----END CERTIFICATE REQUEST-----","user":"a@b.c"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		err := intake(body)
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Fatalf("intake error is not a bad request: %v", err)
		}
	})
}
