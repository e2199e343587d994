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
	noMail := &x509.Certificate{Subject: pkix.Name{CommonName: "carol"}}
	mapFile := filepath.Join(t.TempDir(), "ids.map")
	if err := os.WriteFile(mapFile, []byte("alice@example.org alice a.smith\ncarol carol.c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pol := func(m IdentityMode) *IdentityPolicy {
		file := ""
		if m == IdentityMap {
			file = mapFile
		}
		p, err := NewIdentityPolicy(m, file)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		mode        IdentityMode
		cert        *x509.Certificate
		authz, user string
		ok          bool
	}{
		{IdentityEmail, alice, "", "alice@example.org", true},
		{IdentityEmail, alice, "", "alice", false},
		{IdentityEmail, alice, "", "Alice Smith", false},
		{IdentityLocalPart, alice, "", "alice", true},
		{IdentityLocalPart, alice, "", "Alice", false},
		{IdentityLocalPart, alice, "", "alice@example.org", false},
		{IdentityLocalPart, alice, "bob", "alice", false},
		{IdentityLocalPart, noMail, "", "carol", false},
		{IdentityCN, alice, "", "Alice Smith", true},
		{IdentityCN, alice, "", "alice@example.org", false},
		{IdentityCN, &x509.Certificate{}, "", "x", false},
		{IdentityMap, alice, "", "alice", true},
		{IdentityMap, alice, "", "a.smith", true},
		{IdentityMap, alice, "", "alice@example.org", false},
		{IdentityMap, alice, "", "carol.c", false},
		{IdentityMap, noMail, "", "carol.c", true},
		{IdentityMap, noMail, "", "carol", false},
		{IdentityMap, &x509.Certificate{EmailAddresses: []string{"mallory@example.org"}}, "", "alice", false},
		{IdentityMap, alice, "a.smith", "alice", false},
	}
	for _, tt := range tests {
		why := pol(tt.mode).Bind(tt.cert, tt.authz, tt.user)
		if (why == "") != tt.ok {
			t.Errorf("%s: Bind(%v, %q, %q) = %q, want ok=%v", tt.mode, tt.cert.EmailAddresses, tt.authz, tt.user, why, tt.ok)
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
	} {
		if _, err := NewIdentityPolicy(tt.mode, tt.file); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewIdentityPolicy(%q, %q) = %v, want an error with %q", tt.mode, tt.file, err, tt.want)
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
			why := (*IdentityPolicy)(nil).Bind(cert, tc.authz, tc.user)
			if (why == "") != tc.ok {
				t.Fatalf("Bind(%q, %q) = %q", tc.authz, tc.user, why)
			}
		})
	}
	if why := (*IdentityPolicy)(nil).Bind(&x509.Certificate{}, "", "alice@example.org"); why == "" {
		t.Fatal("a certificate without e-mail bound a login")
	}
}
