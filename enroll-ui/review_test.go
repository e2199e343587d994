package enrollui

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"html"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

// TestOnlyUserCerts: the front's server certificate and the CA's own TLS
// certificate are neither listed nor revocable, even by a serial typed by hand.
func TestOnlyUserCerts(t *testing.T) {
	u := startUI(t, nil)
	admin, err := caclient.New(u.ca.URL, u.ca.AdminCred)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "mail.example.org"}, DNSNames: []string{"mail.example.org"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SignServer(ctx, caclient.ServerRequest{CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		DNS: []string{"mail.example.org"}}); err != nil {
		t.Fatal(err)
	}
	all, err := admin.Search(ctx, caclient.CertQuery{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, c := range all {
		if c.Kind != "user" {
			kinds[c.Kind] = c.Serial
		}
	}
	if kinds["server"] == "" || kinds["ca-tls"] == "" {
		t.Fatalf("the CA lists no server or no ca-tls certificate (%v); the test needs both", kinds)
	}
	csrf := u.login(t)
	list := u.get(t, "/certs")
	for kind, serial := range kinds {
		if strings.Contains(list.body, serial) {
			t.Errorf("the Certificates page lists the %s certificate %s", kind, serial)
		}
		for _, a := range []answer{
			u.get(t, "/certs/"+serial),
			u.get(t, "/revoke?serial="+serial),
			u.post(t, "/revoke", url.Values{"csrf": {csrf}, "serial": {serial}, "reason": {"keyCompromise"}}),
			u.post(t, "/revoke/do", url.Values{"csrf": {csrf}, "serial": {serial}, "reason": {"keyCompromise"}, "confirm": {"yes"}}),
		} {
			if a.status != http.StatusNotFound {
				t.Errorf("%s certificate %s: %d, want 404: %s", kind, serial, a.status, a.body)
			}
		}
	}
	after, err := admin.Search(ctx, caclient.CertQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range after {
		if c.Kind != "user" && c.Status == "revoked" {
			t.Errorf("the UI revoked the %s certificate %s", c.Kind, c.Serial)
		}
	}
}

// TestReplaceOtherUser: "also revoke the old certificate" revokes only the
// new user's own old certificate; a token reassigned from bob to alice
// leaves bob's certificate valid and says to check with an admin.
func TestReplaceOtherUser(t *testing.T) {
	u := startUI(t, nil)
	csrf := u.login(t)
	form := func(user, pin, newPIN string, kv ...string) url.Values {
		v := url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "user": {user}, "pin": {pin},
			"new_pin": {newPIN}, "new_pin2": {newPIN}, "key_type": {"ec-p256"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	if msg := u.runJob(t, form("bob@example.org", u.tok.PIN, "735194")); msg != "" {
		t.Fatalf("enroll bob: %s", msg)
	}
	if msg := u.runJob(t, form("alice@example.org", "735194", "482915", "replace", "yes", "revoke_old", "yes")); msg != "" {
		t.Fatalf("replace with alice: %s", msg)
	}
	certs, err := u.srv.client().Search(context.Background(), caclient.CertQuery{User: "bob@example.org"})
	if err != nil || len(certs) != 1 {
		t.Fatalf("bob's certificates: %v %v", certs, err)
	}
	if certs[0].Status == "revoked" {
		t.Fatal("replacing bob's token for alice revoked bob's certificate")
	}
	if !strings.Contains(u.logs.String(), `"result":"skipped"`) {
		t.Errorf("no audit line for the revocation left out: %s", u.logs)
	}
	// Alice's own old certificate is revoked when her token is renewed.
	if msg := u.runJob(t, form("alice@example.org", "482915", "735194", "replace", "yes", "revoke_old", "yes")); msg != "" {
		t.Fatalf("renew alice: %s", msg)
	}
	certs, _ = u.srv.client().Search(context.Background(), caclient.CertQuery{User: "alice@example.org"})
	revoked := 0
	for _, c := range certs {
		if c.Status == "revoked" {
			revoked++
		}
	}
	if len(certs) != 2 || revoked != 1 {
		t.Fatalf("alice: %d certificates, %d revoked; want 2 and 1", len(certs), revoked)
	}
}

// TestCheckTLSPair: --check (and a start) loads tls_cert/tls_key and refuses
// a key others can read, as every key of imapgate.
func TestCheckTLSPair(t *testing.T) {
	u := startUI(t, nil)
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	certFile, keyFile := pki.Server(t).WriteFiles(t, dir, "ui")
	junk := filepath.Join(dir, "junk.pem")
	testenv.WriteFile(t, junk, []byte("not a certificate\n"))
	open := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(keyFile)
	if err := os.WriteFile(open, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"good", certFile, keyFile, ""},
		{"key readable by others", certFile, open, "chmod 600"},
		{"not a certificate", junk, keyFile, "tls_cert/tls_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := *u.cfg
			cfg.TLSCert, cfg.TLSKey = tc.cert, tc.key
			err := Check(&cfg, nil)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestMailboxLimit: a mailbox over 254 characters is refused before the
// token is touched (its PIN stays, no key is made).
func TestMailboxLimit(t *testing.T) {
	u := startUI(t, nil)
	csrf := u.login(t)
	long := strings.Repeat("a", 300) + "@example.org"
	at254 := strings.Repeat("a", 254-len("@example.org")) + "@example.org"
	for _, path := range []string{"/enroll/user", "/enroll/start"} {
		a := u.post(t, path, url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "user": {long}, "pin": {u.tok.PIN},
			"new_pin": {"735194"}, "new_pin2": {"735194"}, "key_type": {"ec-p256"}})
		if a.status != http.StatusBadRequest || !strings.Contains(a.body, "at most 254") {
			t.Fatalf("%s with a %d-character mailbox: %d %s", path, len(long), a.status, a.body)
		}
	}
	if _, err := u.srv.checkMailbox(at254); err != nil && strings.Contains(err.Error(), "at most") {
		t.Fatalf("a 254-character mailbox: %v", err)
	}
	u.assertNoKey(t, u.tok.PIN) // the PIN is still the old one and no key was made
}

// TestRevokeCommentLimit: the comment is limited to what fits the CA's 256
// characters after "help desk OPERATOR: ", checked before the confirmation;
// a comment of exactly that length revokes.
func TestRevokeCommentLimit(t *testing.T) {
	u := startUI(t, nil)
	csrf := u.login(t)
	if msg := u.runJob(t, url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "user": {"alice@example.org"}, "pin": {u.tok.PIN},
		"new_pin": {"735194"}, "new_pin2": {"735194"}, "key_type": {"ec-p256"}}); msg != "" {
		t.Fatalf("enroll: %s", msg)
	}
	certs, err := u.srv.client().Search(context.Background(), caclient.CertQuery{User: "alice@example.org"})
	if err != nil || len(certs) != 1 {
		t.Fatalf("alice's certificates: %v %v", certs, err)
	}
	serial := certs[0].Serial
	max := 256 - len("help desk "+u.cfg.Operator+": ")
	if a := u.get(t, "/revoke?serial="+serial); !strings.Contains(a.body, `maxlength="`+strconv.Itoa(max)+`"`) {
		t.Fatalf("the form does not limit the comment to %d: %s", max, a.body)
	}
	a := u.post(t, "/revoke", url.Values{"csrf": {csrf}, "serial": {serial}, "reason": {"keyCompromise"}, "comment": {strings.Repeat("x", max+1)}})
	if a.status != http.StatusBadRequest || !strings.Contains(a.body, "too long") {
		t.Fatalf("a comment of %d: %d %s", max+1, a.status, a.body)
	}
	ok := strings.Repeat("y", max)
	if a := u.post(t, "/revoke", url.Values{"csrf": {csrf}, "serial": {serial}, "reason": {"keyCompromise"}, "comment": {ok}}); a.status != http.StatusOK {
		t.Fatalf("confirmation with a comment of %d: %d %s", max, a.status, a.body)
	}
	if a := u.post(t, "/revoke/do", url.Values{"csrf": {csrf}, "serial": {serial}, "reason": {"keyCompromise"}, "comment": {ok}, "confirm": {"yes"}}); a.status != http.StatusOK {
		t.Fatalf("revoke with a comment of %d: %d %s", max, a.status, a.body)
	}
}

// TestPendingLoginKept: cookieless requests (static files, pages that send
// to /login) start no session, and a full store drops only its oldest
// anonymous session, so a login page opened at the desk keeps working.
func TestPendingLoginKept(t *testing.T) {
	hash, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	u := startUI(t, func(c *Config) { c.Operators = []Operator{{Name: "maria", PasswordHash: hash}} })
	desk := u.newClient()
	u.client, desk = desk, u.client
	loginCSRF := u.get(t, "/login").csrf(t)
	u.client, desk = desk, u.client
	before := len(u.srv.sessions.m)
	stranger := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := 0; i < maxSessions+10; i++ {
		for _, p := range []string{"/static/style.css", "/", "/certs"} {
			resp, err := stranger.Get(u.base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	u.srv.sessions.mu.Lock()
	after := len(u.srv.sessions.m)
	u.srv.sessions.mu.Unlock()
	if after != before {
		t.Fatalf("cookieless requests made %d sessions", after-before)
	}
	// A full store of strangers' login pages drops the oldest, one at a time.
	st := newSessions(time.Hour)
	first := st.create()
	second := st.create()
	for i := 0; i < maxSessions-2; i++ {
		st.create()
	}
	st.create()
	if st.get(first.id) != nil || st.get(second.id) == nil {
		t.Fatal("a full store did not drop just the oldest anonymous session")
	}
	// The desk's login page still logs in.
	u.client = desk
	a := u.post(t, "/login", url.Values{"csrf": {loginCSRF}, "name": {"maria"}, "password": {"correct horse battery"}})
	if a.status != http.StatusSeeOther {
		t.Fatalf("the pending login after a flood: %d %s", a.status, a.body)
	}
}

// TestLoginThrottle: each failed login for a name answers after a growing
// delay (capped, never a lockout), another operator is not slowed, a
// success resets it, and the typed name reaches the audit log capped and
// cleaned.
func TestLoginThrottle(t *testing.T) {
	hash, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	u := startUI(t, func(c *Config) {
		c.Operators = []Operator{{Name: "maria", PasswordHash: hash}, {Name: "olaf", PasswordHash: hash}}
	})
	var mu sync.Mutex
	var waits []time.Duration
	u.srv.throttle.sleep = func(_ context.Context, d time.Duration) { mu.Lock(); waits = append(waits, d); mu.Unlock() }
	csrf := u.get(t, "/login").csrf(t)
	login := func(name, pw string) int {
		return u.post(t, "/login", url.Values{"csrf": {csrf}, "name": {name}, "password": {pw}}).status
	}
	for i := 0; i < 8; i++ {
		if st := login("maria", "wrong"); st != http.StatusUnauthorized {
			t.Fatalf("wrong password: %d", st)
		}
	}
	mu.Lock()
	got := append([]time.Duration(nil), waits...)
	waits = nil
	mu.Unlock()
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] || got[i] > loginDelayMax {
			t.Fatalf("delays %v: want growing up to %v", got, loginDelayMax)
		}
	}
	if len(got) != 8 || got[0] <= 0 || got[7] != loginDelayMax {
		t.Fatalf("delays %v", got)
	}
	if st := login("olaf", "wrong"); st != http.StatusUnauthorized {
		t.Fatalf("olaf's typo: %d", st)
	}
	mu.Lock()
	if len(waits) != 1 || waits[0] != loginDelayBase {
		t.Fatalf("olaf's first failure waited %v, want %v: maria's failures slowed olaf", waits, loginDelayBase)
	}
	mu.Unlock()
	typed := strings.Repeat("n\x1b[31m", 100)
	login(typed, "x")
	if strings.Contains(u.logs.String(), "\\u001b") || strings.Contains(u.logs.String(), strings.Repeat("n?[31m", 20)) {
		t.Fatal("the typed name reached the audit log uncapped or with control characters")
	}
	if st := login("maria", "correct horse battery"); st != http.StatusSeeOther {
		t.Fatalf("maria after her failures: %d, want logged in (a delay, not a lockout)", st)
	}
	if loginDelay(1000) != loginDelayMax || loginDelay(0) != 0 {
		t.Fatal("loginDelay is not capped")
	}
}

// TestRemoteNotSpoofed: the remote address logged is the connection's, not
// an X-Forwarded-For header's.
func TestRemoteNotSpoofed(t *testing.T) {
	u := startUI(t, nil)
	for _, p := range []string{"/login"} {
		r, _ := http.NewRequest(http.MethodGet, u.base+p, nil)
		r.Host = "rebind.example"
		r.Header.Set("X-Forwarded-For", "203.0.113.66")
		r.Header.Set("X-Real-IP", "203.0.113.66")
		if a := u.do(t, r); a.status != http.StatusMisdirectedRequest {
			t.Fatalf("bad Host: %d", a.status)
		}
	}
	u.srv.engine.ForwardedByClientIP = true // even if someone turns it on, no proxy is trusted
	r, _ := http.NewRequest(http.MethodGet, u.base+"/login", nil)
	r.Host = "rebind.example"
	r.Header.Set("X-Forwarded-For", "203.0.113.67")
	u.do(t, r)
	logs := u.logs.String()
	if strings.Contains(logs, "203.0.113.6") || !strings.Contains(logs, `"remote":"127.0.0.1:`) {
		t.Fatalf("the log names a spoofed remote address, or none: %s", logs)
	}
}

// TestBusyKeepsCredentials: a scan while an action runs on the token (after
// it asked for a fresh read) still lists the token's credential, so audit
// lines of the next action name the user; once the token is free, the
// objects are read again.
func TestBusyKeepsCredentials(t *testing.T) {
	u := startUI(t, nil)
	csrf := u.login(t)
	if msg := u.runJob(t, url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "user": {"alice@example.org"}, "pin": {u.tok.PIN},
		"new_pin": {"735194"}, "new_pin2": {"735194"}, "key_type": {"ec-p256"}}); msg != "" {
		t.Fatalf("enroll: %s", msg)
	}
	w := u.srv.tokens
	w.scan()
	if v, _ := w.find(u.tok.Serial); firstUser(v) != "alice@example.org" {
		t.Fatalf("after enrollment the token shows %+v", v.Creds)
	}
	if !u.srv.busy.acquire(u.tok.Serial) {
		t.Fatal("token busy")
	}
	w.invalidate(u.tok.Serial)
	w.scan()
	v, _ := w.find(u.tok.Serial)
	u.srv.busy.release(u.tok.Serial)
	if firstUser(v) != "alice@example.org" {
		t.Fatalf("a scan while the token was busy lost its credential: %+v", v.Creds)
	}
	w.scan()
	w.mu.Lock()
	stale := len(w.stale)
	w.mu.Unlock()
	if stale != 0 {
		t.Fatal("the token was not read again once free")
	}
	// The PIN change's audit line names the user.
	a := u.post(t, "/pin/change", url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "auth": {"735194"}, "new_pin": {"482915"}, "new_pin2": {"482915"}})
	if a.status != http.StatusOK {
		t.Fatalf("PIN change: %d", a.status)
	}
	a = u.post(t, "/pin/change", url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "auth": {"482915"}, "new_pin": {"735194"}, "new_pin2": {"735194"}})
	if a.status != http.StatusOK {
		t.Fatalf("second PIN change: %d", a.status)
	}
	if n := strings.Count(u.logs.String(), `"action":"pin-change","user":"alice@example.org"`); n != 2 {
		t.Fatalf("%d PIN change audit lines name alice, want 2: %s", n, u.logs)
	}
}

// TestLinkFile: with link_file the access link is also written to a 0600
// file (the output may be a journal others read).
func TestLinkFile(t *testing.T) {
	lf := filepath.Join(t.TempDir(), "link")
	if err := os.WriteFile(lf, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u := startUI(t, func(c *Config) { c.LinkFile = lf })
	var b []byte
	for i := 0; i < 200; i++ {
		if b, _ = os.ReadFile(lf); strings.Contains(string(b), "token=") {
			break
		}
		waitABit()
	}
	if strings.TrimSpace(string(b)) != u.srv.LoginURL() || !strings.Contains(string(b), testAccessToken) {
		t.Fatalf("link file holds %q, want %s", b, u.srv.LoginURL())
	}
	if st, _ := os.Stat(lf); st.Mode().Perm() != 0o600 {
		t.Fatalf("link file mode %v, want 0600", st.Mode().Perm())
	}
}

// TestCertsPages: the Certificates page shows the newest 50 user
// certificates, a mailbox's newest 100, and links to the older ones, page
// after page, none shown twice; a damaged link says to search again.
func TestCertsPages(t *testing.T) {
	u := startUI(t, nil)
	agent, err := caclient.New(u.ca.URL, u.ca.EnrollCred)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "many@example.org"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	const n = userPage + 1
	for range n {
		if _, err := agent.Sign(context.Background(), caclient.SignRequest{CSR: csr, User: "many@example.org"}); err != nil {
			t.Fatal(err)
		}
	}
	u.login(t)
	rows := regexp.MustCompile(`<a href="/certs/([0-9A-F]+)">`)
	older := regexp.MustCompile(`<a href="(/certs\?[^"]+)" id="older">`)
	for _, tc := range []struct {
		start string
		pages []int
	}{{"/certs", []int{newestPage, newestPage, 1}}, {"/certs?q=many%40example.org", []int{userPage, 1}}} {
		seen := map[string]bool{}
		next := tc.start
		for i, want := range tc.pages {
			a := u.get(t, next)
			got := rows.FindAllStringSubmatch(a.body, -1)
			if a.status != http.StatusOK || len(got) != want {
				t.Fatalf("%s page %d: %d, %d certificates, want %d", tc.start, i+1, a.status, len(got), want)
			}
			for _, m := range got {
				if seen[m[1]] {
					t.Errorf("%s page %d shows %s again", tc.start, i+1, m[1])
				}
				seen[m[1]] = true
			}
			link := older.FindStringSubmatch(a.body)
			if last := i == len(tc.pages)-1; last != (link == nil) {
				t.Fatalf("%s page %d: link to older certificates %v, want one unless it is the last page", tc.start, i+1, link)
			}
			if link != nil {
				next = html.UnescapeString(link[1])
			}
		}
	}
	for _, bad := range []string{"bm90LWEtY3Vyc29y", "a%2Fb", strings.Repeat("A", 300)} {
		a := u.get(t, "/certs?q=&before="+bad)
		if a.status != http.StatusBadRequest || !strings.Contains(a.body, "damaged or from another CA: search again") {
			t.Errorf("before=%.20s: %d, want 400 saying to search again: %.300s", bad, a.status, a.body)
		}
	}
}
