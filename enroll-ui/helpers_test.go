package enrollui

import (
	"bytes"
	"context"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/pkcs11"
	"github.com/imapgate/imapgate/testenv"
)

// testUI is a UI serving on 127.0.0.1 against a real CA and a SoftHSM2 token.
type testUI struct {
	srv    *Server
	base   string // http://127.0.0.1:port
	ca     *testenv.CA
	tok    *testenv.SoftHSMToken
	client *http.Client // with a cookie jar, logged out
	logs   *lockedWriter
	cfg    *Config
	// fault is the p11fault module the UI loads instead of SoftHSM2
	// (startFaultUI), nil otherwise.
	fault *testenv.P11Fault
}

const testAccessToken = "test-access-token-not-secret"

// startUI starts the UI; edit changes the config first. The CA only issues
// for example.org, so another domain is a mailbox the CA refuses.
func startUI(t *testing.T, edit func(*Config)) *testUI {
	t.Helper()
	return startUIWith(t, edit, false)
}

// startFaultUI is startUI with the UI loading the token through p11fault,
// which injects the faults SoftHSM2 cannot produce (testenv.NewP11Fault).
func startFaultUI(t *testing.T, edit func(*Config)) *testUI {
	t.Helper()
	return startUIWith(t, edit, true)
}

func startUIWith(t *testing.T, edit func(*Config), fault bool) *testUI {
	t.Helper()
	tok := testenv.SoftHSM(t)
	var f *testenv.P11Fault
	if fault {
		f = testenv.NewP11Fault(t, tok)
	}
	c := testenv.StartCA(t, testenv.CAOptions{Configure: func(cfg *ca.Config) {
		cfg.Certificates.AllowedDomains = []string{"example.org", "refused.example.net"}
	}})
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.Module = tok.Module
	if f != nil {
		cfg.Module = f.Module
	}
	cfg.CAURL = c.URL
	cfg.AgentCred = c.EnrollCred
	cfg.AdminCred = c.AdminCred
	cfg.Operator = "test operator"
	if edit != nil {
		edit(cfg)
	}
	logs := &lockedWriter{w: &bytes.Buffer{}}
	srv, err := New(cfg, Options{Log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), AccessToken: testAccessToken})
	if err != nil {
		t.Fatalf("enroll-ui: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	u := &testUI{srv: srv, base: "http://" + ln.Addr().String(), ca: c, tok: tok, logs: logs, cfg: cfg, fault: f}
	u.client = u.newClient()
	return u
}

// lockedWriter lets the server's goroutines log into one buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (u *testUI) newClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login opens the access-token link and returns the session's CSRF token.
func (u *testUI) login(t *testing.T) string {
	t.Helper()
	resp := u.get(t, "/login?token="+testAccessToken)
	if resp.status != http.StatusOK || !strings.Contains(resp.body, `content="0;url=/"`) {
		t.Fatalf("login: %d %s", resp.status, resp.body)
	}
	return u.get(t, "/").csrf(t)
}

type answer struct {
	status int
	header http.Header
	body   string
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (a answer) csrf(t *testing.T) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(a.body)
	if m == nil {
		t.Fatalf("no CSRF token in the page (%d): %s", a.status, a.body)
	}
	return m[1]
}

func (u *testUI) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := u.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (u *testUI) get(t *testing.T, path string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.base+path, nil)
	return u.do(t, req)
}

func (u *testUI) post(t *testing.T, path string, form url.Values) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return u.do(t, req)
}

// form is a POST form for the test token with the session's CSRF token.
func (u *testUI) form(csrf string, kv ...string) url.Values {
	v := url.Values{"csrf": {csrf}, "token": {u.tok.Serial}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// enrollForm is the enrollment form for alice with the token's PIN and a
// new PIN 735194; kv overrides fields.
func (u *testUI) enrollForm(csrf string, kv ...string) url.Values {
	base := []string{"user", "alice@example.org", "pin", u.tok.PIN, "new_pin", "735194", "new_pin2", "735194", "key_type", "ec-p256"}
	return u.form(csrf, append(base, kv...)...)
}

// tokenObjects lists the test token's objects after a user login.
func (u *testUI) tokenObjects(t *testing.T, pin string) []pkcs11.Object {
	t.Helper()
	mod, err := pkcs11.Open(u.cfg.Module) // the UI's own module: one SoftHSM2 per process
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	tok, err := mod.OpenToken(u.tok.Serial)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if err := tok.Login(pkcs11.NewPIN(pin)); err != nil {
		t.Fatalf("login with PIN: %v", err)
	}
	objs, err := tok.Objects()
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

var jobErrRE = regexp.MustCompile(`(?s)id="job-error">(.*?)</p>`)

func htmlUnescape(s string) string { return html.UnescapeString(s) }

// waitABit paces a loop that waits for a background job to end.
func waitABit() { time.Sleep(50 * time.Millisecond) }

// wrongPIN types a wrong PIN into the test token from outside the UI.
func (u *testUI) wrongPIN(t *testing.T) {
	t.Helper()
	mod, err := pkcs11.Open(u.cfg.Module) // the UI's own module: one SoftHSM2 per process
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	tok, err := mod.OpenToken(u.tok.Serial)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if err := tok.Login(pkcs11.NewPIN("000999")); err == nil {
		t.Fatal("a wrong PIN logged in")
	}
}
