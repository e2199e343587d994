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
		mode     mtls.IdentityMode
		user     string
		password string
		ok       bool
	}{
		{mtls.IdentityLocalPart, "alice", "alice-secret", true},
		{mtls.IdentityLocalPart, "bob", "bob-secret", false},
		{mtls.IdentityMap, "a.smith", "smith-secret", true},
		{mtls.IdentityMap, "alice", "alice-secret", true},
		{mtls.IdentityMap, "bob", "bob-secret", false},
		{mtls.IdentityEmail, "alice", "alice-secret", false},
	} {
		t.Run(string(tt.mode)+"/"+tt.user, func(t *testing.T) {
			file := ""
			if tt.mode == mtls.IdentityMap {
				file = mapFile
			}
			pol, err := mtls.NewIdentityPolicy(tt.mode, file)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, envOptions{dovecot: dc, mod: func(o *mtls.Options) { o.Identity = pol }})
			l := e.dial(t, e.alice)
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
