package mtls_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestIdentityModesEndToEnd: a mail server whose users log in as "alice" rather
// than alice@example.org, bound to alice's certificate by local part and by a
// mapping file; other names stay refused like a wrong password.
func TestIdentityModesEndToEnd(t *testing.T) {
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{Users: []testenv.DovecotUser{
		{Name: "alice", Password: "alice-secret"}, {Name: "a.smith", Password: "smith-secret"}, {Name: "bob", Password: "bob-secret"},
	}})
	mapFile := filepath.Join(t.TempDir(), "ids.map")
	testenv.WriteFile(t, mapFile, []byte("alice@example.org  alice a.smith\n"))
	for _, tt := range []struct {
		mode      mtls.IdentityMode
		user      string
		password  string
		ok        bool
		elsewhere bool // a certificate of the same CA for alice@anything.example
	}{
		{mtls.IdentityLocalPart, "alice", "alice-secret", true, false},
		// local_part binds the domain too (identity.domains).
		{mtls.IdentityLocalPart, "alice", "alice-secret", false, true},
		{mtls.IdentityLocalPart, "bob", "bob-secret", false, false},
		{mtls.IdentityMap, "a.smith", "smith-secret", true, false},
		{mtls.IdentityMap, "alice", "alice-secret", true, false},
		{mtls.IdentityMap, "bob", "bob-secret", false, false},
		{mtls.IdentityEmail, "alice", "alice-secret", false, false},
	} {
		name := string(tt.mode) + "/" + tt.user
		if tt.elsewhere {
			name += "/other_domain"
		}
		t.Run(name, func(t *testing.T) {
			file := ""
			if tt.mode == mtls.IdentityMap {
				file = mapFile
			}
			var domains []string
			if tt.mode == mtls.IdentityLocalPart {
				domains = []string{"example.org"}
			}
			pol, err := mtls.NewIdentityPolicy(tt.mode, file, domains)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, envOptions{dovecot: dc, mod: func(o *mtls.Options) { o.Identity = pol }})
			leaf := e.alice
			if tt.elsewhere {
				leaf = e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@anything.example"}})
			}
			l := e.dial(t, leaf)
			l.line() // greeting
			l.send("a1 LOGIN " + tt.user + " " + tt.password + "\r\n")
			got := l.until("a1 ")
			if ok := strings.HasPrefix(got, "a1 OK"); ok != tt.ok {
				t.Fatalf("LOGIN %s with alice's certificate in mode %s: %q, want ok=%v", tt.user, tt.mode, got, tt.ok)
			}
			if !tt.ok && !strings.Contains(got, "AUTHENTICATIONFAILED") {
				t.Fatalf("refusal %q does not look like a wrong password", got)
			}
		})
	}
}
