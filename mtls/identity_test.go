package mtls

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityModes(t *testing.T) {
	alice := &x509.Certificate{Subject: pkix.Name{CommonName: "Alice Smith"}, EmailAddresses: []string{"alice@Example.org"}}
	elsewhere := &x509.Certificate{EmailAddresses: []string{"alice@anything.example"}}
	twoMails := &x509.Certificate{EmailAddresses: []string{"alice@other.example", "alice@example.org"}}
	noMail := &x509.Certificate{Subject: pkix.Name{CommonName: "carol"}}
	kitchen := &x509.Certificate{EmailAddresses: []string{"alice@kitchen.org"}}
	mapFile := filepath.Join(t.TempDir(), "ids.map")
	if err := os.WriteFile(mapFile, []byte("alice@example.org alice a.smith\nalice@kitchen.org k.alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pol := func(m IdentityMode) *IdentityPolicy {
		file := ""
		if m == IdentityMap {
			file = mapFile
		}
		var domains []string
		if m == IdentityLocalPart {
			domains = []string{"EXAMPLE.org"}
		}
		p, err := NewIdentityPolicy(m, file, domains)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		mode        IdentityMode
		cert        *x509.Certificate
		authz, user string
		login       string // what the backend gets; empty: refused
	}{
		// email: the backend gets the certificate's own spelling.
		{IdentityEmail, alice, "", "alice@example.org", "alice@Example.org"},
		{IdentityEmail, alice, "", "alice@EXAMPLE.ORG", "alice@Example.org"},
		{IdentityEmail, alice, "", "alice", ""},
		{IdentityEmail, alice, "", "Alice Smith", ""},
		// A Kelvin sign (U+212A) folds to k in Unicode, not in ASCII.
		{IdentityEmail, kitchen, "", "alice@\u212Aitchen.org", ""},
		{IdentityEmail, kitchen, "", "alice@KITCHEN.org", "alice@kitchen.org"},
		{IdentityLocalPart, alice, "", "alice", "alice"},
		{IdentityLocalPart, alice, "", "Alice", ""},
		{IdentityLocalPart, alice, "", "alice@example.org", ""},
		{IdentityLocalPart, alice, "bob", "alice", ""},
		{IdentityLocalPart, noMail, "", "carol", ""},
		// local_part: the domain must be one of identity.domains.
		{IdentityLocalPart, elsewhere, "", "alice", ""},
		{IdentityLocalPart, twoMails, "", "alice", "alice"},
		{IdentityCN, alice, "", "Alice Smith", "Alice Smith"},
		{IdentityCN, alice, "", "alice@example.org", ""},
		{IdentityCN, &x509.Certificate{}, "", "x", ""},
		{IdentityMap, alice, "", "alice", "alice"},
		{IdentityMap, alice, "", "a.smith", "a.smith"},
		{IdentityMap, alice, "", "alice@example.org", ""},
		{IdentityMap, alice, "", "k.alice", ""},
		// map: keyed on the e-mail only; a certificate without one has no entry.
		{IdentityMap, noMail, "", "carol", ""},
		{IdentityMap, &x509.Certificate{Subject: pkix.Name{CommonName: "alice@example.org"}}, "", "alice", ""},
		{IdentityMap, &x509.Certificate{EmailAddresses: []string{"mallory@example.org"}}, "", "alice", ""},
		{IdentityMap, &x509.Certificate{EmailAddresses: []string{"alice@\u212Aitchen.org"}}, "", "k.alice", ""},
		{IdentityMap, alice, "a.smith", "alice", ""},
	}
	for _, tt := range tests {
		login, why := pol(tt.mode).Bind(tt.cert, tt.authz, tt.user)
		if login != tt.login || (why == "") != (tt.login != "") {
			t.Errorf("%s: Bind(%v, %q, %q) = %q, %q; want login %q", tt.mode, tt.cert.EmailAddresses, tt.authz, tt.user, login, why, tt.login)
		}
	}
}

func TestNewIdentityPolicyErrors(t *testing.T) {
	for _, tt := range []struct {
		mode IdentityMode
		file string
		want string
	}{
		{"upn", "", "use email"},
		{IdentityMap, "", "needs identity.map_file"},
		{IdentityMap, "/nonexistent/ids.map", "no such file"},
		{IdentityEmail, "testdata/identitymap/good_basic.map", "set mode: map"},
		{IdentityMap, "testdata/identitymap/fail_duplicate.map", "line 2"},
		{IdentityLocalPart, "", "needs identity.domains"},
	} {
		if _, err := NewIdentityPolicy(tt.mode, tt.file, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewIdentityPolicy(%q, %q) = %v, want an error with %q", tt.mode, tt.file, err, tt.want)
		}
	}
	for _, tt := range []struct {
		mode    IdentityMode
		domains []string
		want    string
	}{
		{IdentityLocalPart, []string{"\u212Aitchen.org"}, "xn--"},
		{IdentityLocalPart, []string{"example..org"}, "not a domain name"},
		{IdentityLocalPart, []string{""}, "not a domain name"},
		{IdentityEmail, []string{"example.org"}, "only used with mode local_part"},
		{IdentityMap, []string{"example.org"}, "only used with mode local_part"},
	} {
		if _, err := NewIdentityPolicy(tt.mode, "", tt.domains); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewIdentityPolicy(%q, domains %q) = %v, want an error with %q", tt.mode, tt.domains, err, tt.want)
		}
	}
}

// Fixtures: good_*.map parse, fail_*.map are refused. Adding a case is adding a file.
func TestIdentityMapFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/identitymap/*.map")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseIdentityMap(strings.NewReader(string(b)))
		name := filepath.Base(f)
		switch {
		case strings.HasPrefix(name, "good_"):
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case strings.HasPrefix(name, "fail_"):
			if err == nil {
				t.Errorf("%s: accepted: %v", name, m)
			}
		default:
			t.Errorf("%s: a fixture's name starts with good_ or fail_", name)
		}
	}
	m, err := ParseIdentityMap(strings.NewReader("alice@Example.ORG alice a.smith\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := m["alice@example.org"]; len(got) != 2 || got[1] != "a.smith" {
		t.Errorf("domain not lower-cased or logins lost: %v", m)
	}
}

func TestIdentityMapLimits(t *testing.T) {
	long := "alice@example.org " + strings.Repeat("a", maxMapLineBytes) + "\n"
	if _, err := ParseIdentityMap(strings.NewReader(long)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("over-long line: %v", err)
	}
	many := "alice@example.org" + strings.Repeat(" x", maxLoginsPerLine+1) + "\n"
	if _, err := ParseIdentityMap(strings.NewReader(many)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("too many logins: %v", err)
	}
}

func FuzzParseIdentityMap(f *testing.F) {
	files, err := filepath.Glob("testdata/identitymap/*.map")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed fixtures: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseIdentityMap(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for id, logins := range m {
			if id == "" || len(logins) == 0 || len(logins) > maxLoginsPerLine {
				t.Fatalf("bad entry %q → %q", id, logins)
			}
			for _, l := range logins {
				if l == "" || strings.ContainsAny(l, " \t\r\n#") {
					t.Fatalf("login %q has a blank, newline or #", l)
				}
			}
		}
	})
}

// TestBindIdentity: the default (email) mode, as a nil policy applies it.
func TestBindIdentity(t *testing.T) {
	cert := &x509.Certificate{EmailAddresses: []string{"alice@Example.org"}}
	for _, tc := range []struct {
		name, authz, user string
		ok                bool
	}{
		{"exact", "", "alice@Example.org", true},
		{"domain_case", "", "alice@EXAMPLE.ORG", true},
		{"authz_same", "alice@example.org", "alice@example.org", true},
		{"local_case", "", "Alice@example.org", false},
		{"other_user", "", "bob@example.org", false},
		{"no_domain", "", "alice", false},
		{"authz_other", "bob@example.org", "alice@example.org", false},
		{"suffix_trick", "", "alice@example.org.evil", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, why := (*IdentityPolicy)(nil).Bind(cert, tc.authz, tc.user)
			if (why == "") != tc.ok {
				t.Fatalf("Bind(%q, %q) = %q", tc.authz, tc.user, why)
			}
		})
	}
	if _, why := (*IdentityPolicy)(nil).Bind(&x509.Certificate{}, "", "alice@example.org"); why == "" {
		t.Fatal("a certificate without e-mail bound a login")
	}
}
