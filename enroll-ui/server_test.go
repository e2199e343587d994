package enrollui

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/pkcs11"
	"github.com/imapgate/imapgate/testenv"
)

// TestSecurity: no access token, a wrong one, a foreign Host, a POST
// without or with a wrong CSRF token or from another origin are all refused;
// every page carries the security headers and the cookie its flags.
func TestSecurity(t *testing.T) {
	u := startUI(t, nil)

	t.Run("no session", func(t *testing.T) {
		a := u.get(t, "/")
		if a.status != http.StatusSeeOther || a.header.Get("Location") != "/login" {
			t.Fatalf("GET / without login: %d %s, want 303 to /login", a.status, a.header.Get("Location"))
		}
		if a := u.get(t, "/tokens/fragment"); a.status != http.StatusUnauthorized {
			t.Fatalf("fragment without login: %d, want 401", a.status)
		}
	})
	t.Run("wrong access token", func(t *testing.T) {
		a := u.get(t, "/login?token=guess")
		if a.status != http.StatusUnauthorized || !strings.Contains(a.body, "not the one this UI printed") {
			t.Fatalf("wrong token: %d %s", a.status, a.body)
		}
		if a := u.get(t, "/"); a.status != http.StatusSeeOther {
			t.Fatalf("after a wrong token: GET / %d, want 303", a.status)
		}
	})

	csrf := u.login(t)
	if strings.Contains(u.logs.String(), testAccessToken) {
		t.Fatal("the access token reached the log")
	}

	t.Run("headers and cookie", func(t *testing.T) {
		a := u.get(t, "/")
		if a.status != http.StatusOK {
			t.Fatalf("GET / after login: %d", a.status)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'none'", "X-Frame-Options": "DENY",
			"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
		} {
			if got := a.header.Get(k); !strings.Contains(got, want) {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		fresh := u.newClient()
		resp, err := fresh.Get(u.base + "/login?token=" + testAccessToken)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		ck := resp.Header.Get("Set-Cookie")
		for _, want := range []string{CookieName + "=", "HttpOnly", "SameSite=Strict"} {
			if !strings.Contains(ck, want) {
				t.Errorf("Set-Cookie %q lacks %s", ck, want)
			}
		}
		if strings.Contains(ck, "Secure") {
			t.Errorf("Set-Cookie %q: Secure over plain HTTP would drop the cookie", ck)
		}
	})

	form := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		want   string
	}{
		{"CSRF missing", func() *http.Request {
			return postReq(u.base+"/pin/change", form("token", u.tok.Serial, "auth", "123456", "new_pin", "735194", "new_pin2", "735194"))
		}, http.StatusForbidden, "not sent by this UI"},
		{"CSRF wrong", func() *http.Request {
			return postReq(u.base+"/pin/change", form("csrf", "x"+csrf[1:], "token", u.tok.Serial, "auth", "123456", "new_pin", "735194", "new_pin2", "735194"))
		}, http.StatusForbidden, "not sent by this UI"},
		{"foreign origin", func() *http.Request {
			r := postReq(u.base+"/logout", form("csrf", csrf))
			r.Header.Set("Origin", "http://evil.example")
			return r
		}, http.StatusForbidden, "not sent by this UI"},
		{"bad Host", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, u.base+"/", nil)
			r.Host = "rebind.example:80"
			return r
		}, http.StatusMisdirectedRequest, "answers only as"},
		{"localhost is another name", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, u.base+"/", nil)
			r.Host = strings.Replace(strings.TrimPrefix(u.base, "http://"), "127.0.0.1", "localhost", 1)
			return r
		}, http.StatusMisdirectedRequest, "answers only as"},
		{"form too large", func() *http.Request {
			return postReq(u.base+"/pin/change", form("csrf", csrf, "token", u.tok.Serial, "pad", strings.Repeat("x", maxForm)))
		}, http.StatusRequestEntityTooLarge, "too large"},
		{"unknown page", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, u.base+"/nope", nil)
			return r
		}, http.StatusNotFound, "no such page"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := u.do(t, tc.req())
			if a.status != tc.status || !strings.Contains(a.body, tc.want) {
				t.Fatalf("%d %q, want %d containing %q\nlog: %s", a.status, a.body, tc.status, tc.want, u.logs)
			}
		})
	}
	// Nothing above changed the PIN.
	u.tokenObjects(t, u.tok.PIN)
}

func postReq(target string, form url.Values) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// TestPasswordLogin: with operators configured there is no access token;
// a wrong password is refused, the right one opens a session named after the
// operator, and the audit log gets a line per action.
func TestPasswordLogin(t *testing.T) {
	hash, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(t.TempDir(), "audit.log")
	u := startUI(t, func(c *Config) {
		c.Operators = []Operator{{Name: "maria", PasswordHash: hash}}
		c.AuditLog = auditFile
	})
	if a := u.get(t, "/login?token="+testAccessToken); a.status != http.StatusOK || !strings.Contains(a.body, `name="password"`) {
		t.Fatalf("the access token works although operators are configured: %d", a.status)
	}
	csrf := u.get(t, "/login").csrf(t)
	for _, tc := range []struct {
		name, pw string
		status   int
	}{
		{"maria", "wrong password", http.StatusUnauthorized},
		{"mallory", "correct horse battery", http.StatusUnauthorized},
		{"maria", "correct horse battery", http.StatusSeeOther},
	} {
		a := u.post(t, "/login", url.Values{"csrf": {csrf}, "name": {tc.name}, "password": {tc.pw}})
		if a.status != tc.status {
			t.Fatalf("login %s: %d, want %d", tc.name, a.status, tc.status)
		}
		if strings.Contains(a.body, tc.pw) {
			t.Fatal("the login page echoes the password")
		}
	}
	page := u.get(t, "/")
	if page.status != http.StatusOK || !strings.Contains(page.body, "maria") {
		t.Fatalf("after login: %d", page.status)
	}
	csrf = page.csrf(t)
	a := u.post(t, "/pin/change", url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "auth": {u.tok.PIN}, "new_pin": {"735194"}, "new_pin2": {"735194"}})
	if a.status != http.StatusOK || !strings.Contains(a.body, "The PIN was changed") {
		t.Fatalf("PIN change: %d %s", a.status, a.body)
	}
	if a := u.post(t, "/logout", url.Values{"csrf": {csrf}}); a.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", a.status)
	}
	if a := u.get(t, "/"); a.status != http.StatusSeeOther {
		t.Fatalf("after logout: %d, want 303 to /login", a.status)
	}
	u.srv.bg.Wait()
	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, want := range []string{`"action":"login-failed"`, `"operator":"maria","action":"login"`, `"action":"pin-change"`, `"token_serial":"` + u.tok.Serial + `"`, `"result":"ok"`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s:\n%s", want, log)
		}
	}
	for _, secret := range []string{"correct horse", "735194", u.tok.PIN} {
		if strings.Contains(log, secret) || strings.Contains(u.logs.String(), secret) {
			t.Errorf("a secret (%s) reached a log", secret)
		}
	}
	if st, _ := os.Stat(auditFile); st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", st.Mode().Perm())
	}
}

// TestTLS: over HTTPS the session cookie is Secure and HSTS is sent.
func TestTLS(t *testing.T) {
	pki := testenv.NewPKI(t)
	certFile, keyFile := pki.Server(t).WriteFiles(t, t.TempDir(), "ui")
	u := startUI(t, func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	u.base = strings.Replace(u.base, "http://", "https://", 1)
	u.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool(), MinVersion: tls.VersionTLS12}}
	a := u.get(t, "/login?token="+testAccessToken)
	if a.status != http.StatusOK {
		t.Fatalf("login over TLS: %d %s", a.status, a.body)
	}
	if ck := a.header.Get("Set-Cookie"); !strings.Contains(ck, "Secure") || !strings.Contains(ck, "HttpOnly") {
		t.Fatalf("Set-Cookie over TLS: %q", ck)
	}
	if h := a.header.Get("Strict-Transport-Security"); h == "" {
		t.Fatal("no HSTS over TLS")
	}
	if !strings.HasPrefix(u.srv.LoginURL(), "https://127.0.0.1:") {
		t.Fatalf("login link %s", u.srv.LoginURL())
	}
	// Plain HTTP to the TLS port gets nothing useful.
	plain := &http.Client{}
	if resp, err := plain.Get(strings.Replace(u.base, "https://", "http://", 1) + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the TLS port served a page over plain HTTP")
		}
	}
}

// TestNoAdmin: without an admin credential there is no revocation.
func TestNoAdmin(t *testing.T) {
	u := startUI(t, func(c *Config) { c.AdminCred = "" })
	csrf := u.login(t)
	if a := u.get(t, "/"); strings.Contains(a.body, `href="/revoke"`) {
		t.Fatal("the menu offers Revoke without an admin credential")
	}
	for _, a := range []answer{
		u.get(t, "/revoke?serial=ABCD"),
		u.post(t, "/revoke/do", url.Values{"csrf": {csrf}, "serial": {"ABCD"}, "reason": {"keyCompromise"}, "confirm": {"yes"}}),
	} {
		if a.status != http.StatusForbidden || !strings.Contains(a.body, "no admin credential") {
			t.Fatalf("revoke without admin: %d %s", a.status, a.body)
		}
	}
	a := u.post(t, "/enroll/start", url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "user": {"alice@example.org"},
		"pin": {u.tok.PIN}, "new_pin": {"735194"}, "new_pin2": {"735194"}, "key_type": {"ec-p256"}, "revoke_old": {"yes"}})
	if a.status != http.StatusForbidden || !strings.Contains(a.body, "cannot revoke") {
		t.Fatalf("enroll with revoke_old without admin: %d %s", a.status, a.body)
	}
	// The whole wizard works without JavaScript: the job page refreshes
	// itself (meta refresh in noscript) until the receipt.
	if msg := u.runJob(t, url.Values{"csrf": {csrf}, "token": {u.tok.Serial}, "user": {"alice@example.org"},
		"pin": {u.tok.PIN}, "new_pin": {"735194"}, "new_pin2": {"735194"}, "key_type": {"rsa-2048"}}); msg != "" {
		t.Fatalf("enrollment without JavaScript: %s", msg)
	}
	var rsaKey bool
	for _, o := range u.tokenObjects(t, "735194") {
		rsaKey = rsaKey || o.Class == pkcs11.ClassCertificate && o.Cert != nil && o.Cert.PublicKeyAlgorithm == x509.RSA
	}
	if !rsaKey {
		t.Fatal("no RSA certificate on the token after an rsa-2048 enrollment")
	}
}
