package enrollui

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imapgate/imapgate/pkcs11"
)

// chromiumPath is Debian's chromium (scripts/deps.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// browser is a headless Chromium tab; shot saves a screenshot of the page.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string
}

// startBrowser starts Debian's Chromium headless. Screenshots go to
// $IMAPGATE_SCREENSHOTS when set (docs/screenshots is refreshed with
// IMAPGATE_SCREENSHOTS=$PWD/docs/screenshots), else to a temporary directory.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Fatalf("%s not found: run make deps (scripts/deps.sh installs chromium)", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", "new"),
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 860),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-pings", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser now, outside any timeout
		t.Fatalf("start chromium: %v", err)
	}
	dir := os.Getenv("IMAPGATE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	return &browser{t: t, ctx: ctx, dir: dir}
}

// do runs the steps with a generous limit (a wait for an element, not a
// timing assertion).
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// shot gives Chromium 30 seconds, twice: its capture once hung for ten
// minutes under load (a full package run), which no assertion here is about.
func (b *browser) shot(name string) {
	b.t.Helper()
	var png []byte
	var err error
	for try := 0; try < 2; try++ {
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err == nil {
			break
		}
		b.t.Logf("screenshot %s, try %d: %v", name, try+1, err)
	}
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func css(s string) chromedp.CSS { return chromedp.CSS(s) }

// TestBrowser drives the UI in real headless Chromium against a real CA and
// a SoftHSM2 token: log in with the start-up link, enroll, re-enroll the
// token replacing (and revoking) its credential, change the PIN, find the
// certificate with its audit trail, revoke it, and read the status page.
func TestBrowser(t *testing.T) {
	u := startUI(t, nil)
	b := startBrowser(t)
	serial := u.tok.Serial
	row := `tr[data-serial="` + serial + `"]`

	b.do("log in and see the token", chromedp.Navigate(u.srv.LoginURL()), chromedp.WaitVisible(css(row)))
	if loc, _ := chromedp.Run(b.ctx, chromedp.Location()); strings.Contains(loc, "token=") {
		t.Fatalf("the access token stays in the address bar: %s", loc)
	}
	if got := b.text(row); !strings.Contains(got, "blank") || !strings.Contains(got, u.tok.Label) {
		t.Fatalf("token row: %q", got)
	}

	// The open page follows the token's state without a reload: a wrong PIN
	// typed elsewhere shows. (SoftHSM2 cannot be pulled out or inserted;
	// TestBrowserFaults does both through p11fault.)
	u.wrongPIN(t)
	b.do("the list shows the wrong PIN", chromedp.WaitVisible(css(row+` .badge.warn`)))
	b.shot("tokens")

	// Enroll: token → mailbox → PIN and key → progress → receipt.
	b.do("enroll: pick the token", chromedp.Click(css(row+` a[href^="/enroll"]`)), chromedp.WaitVisible(css("#user")),
		chromedp.SendKeys(css("#user"), "alice@example.org"))
	b.shot("enroll-1-mailbox")
	b.do("enroll: mailbox", chromedp.Click(css("#next")), chromedp.WaitVisible(css("#new_pin")),
		chromedp.SendKeys(css("#pin"), u.tok.PIN), chromedp.SendKeys(css("#new_pin"), "735194"), chromedp.SendKeys(css("#new_pin2"), "735194"))
	b.shot("enroll-2-pin")
	b.do("enroll: start and wait for the receipt", chromedp.Click(css("#start")), chromedp.WaitVisible(css("#receipt")))
	b.shot("enroll-3-receipt")
	first := b.text("#r-serial")
	if got := b.text("#r-user"); got != "alice@example.org" || first == "" {
		t.Fatalf("receipt: user %q serial %q", got, first)
	}
	assertOnToken(t, u, "735194", first)

	// The tokens page now names alice.
	b.do("tokens after enrollment", chromedp.Navigate(u.base+"/"), chromedp.WaitVisible(css(row)))
	if got := b.text(row); !strings.Contains(got, "alice@example.org") || !strings.Contains(got, first) {
		t.Fatalf("token row after enrollment: %q", got)
	}

	// Re-enroll the same token: confirm the replacement, revoke the old one.
	b.do("replace: mailbox", chromedp.Click(css(row+` a[href^="/enroll"]`)), chromedp.WaitVisible(css("#user")),
		chromedp.SendKeys(css("#user"), "alice@example.org"), chromedp.Click(css("#next")), chromedp.WaitVisible(css("#replace")),
		chromedp.SendKeys(css("#pin"), "735194"), chromedp.SendKeys(css("#new_pin"), "735194"), chromedp.SendKeys(css("#new_pin2"), "735194"),
		chromedp.Click(css("#replace")), chromedp.Click(css("#revoke_old")))
	b.shot("replace-1-confirm")
	b.do("replace: run", chromedp.Click(css("#start")), chromedp.WaitVisible(css("#receipt")))
	b.shot("replace-2-receipt")
	second1 := b.text("#r-serial")
	if second1 == first || !strings.Contains(b.text("#receipt"), "Revoked") {
		t.Fatalf("replacement receipt: serial %s (old %s): %s", second1, first, b.text("#receipt"))
	}
	assertOnToken(t, u, "735194", second1)
	assertRevoked(t, u, first, true)

	// The card logs in through the front to Dovecot: certificate, then password.
	front := startFront(t, u)
	front.loginOK(t, "735194", false)

	// PIN change at the desk.
	b.do("pin change", chromedp.Navigate(u.base+"/pin?token="+serial), chromedp.WaitVisible(css("#c-auth")),
		chromedp.SendKeys(css("#c-auth"), "735194"), chromedp.SendKeys(css("#c-new"), "519283"), chromedp.SendKeys(css("#c-new2"), "519283"),
		chromedp.Click(css("#c-go")), chromedp.WaitVisible(css("#notice")))
	b.shot("pin")
	u.tokenObjects(t, "519283")
	// The new PIN unlocks the card for the front; this session stays open
	// through the revocation below.
	live := front.loginOK(t, "519283", true)

	// Certificates: search, details with the audit trail.
	b.do("certificates", chromedp.Navigate(u.base+"/certs"), chromedp.WaitVisible(css("#q")),
		chromedp.SendKeys(css("#q"), "alice@example.org"), chromedp.Click(css("#search")), chromedp.WaitVisible(css("#certs")))
	b.shot("certs")
	if got := b.text("#certs"); !strings.Contains(got, "revoked (superseded") || !strings.Contains(got, second1) {
		t.Fatalf("certificate list: %q", got)
	}
	u.srv.bg.Wait() // the UI's own audit records reach the CA in the background
	b.do("certificate details", chromedp.Click(css(`a[href="/certs/`+second1+`"]`)), chromedp.WaitVisible(css("#trail")))
	b.shot("cert")
	if got := b.text("#trail"); !strings.Contains(got, "issue") || !strings.Contains(got, "helpdesk-enroll") || !strings.Contains(got, "test help desk") {
		t.Fatalf("audit trail of %s lacks the CA's issue and the help desk's enroll entry: %q", second1, got)
	}

	// Revoke the current one: reason, confirmation naming user and serial, result.
	b.do("revoke: reason", chromedp.Click(css("#revoke-link")), chromedp.WaitVisible(css("#comment")),
		chromedp.SendKeys(css("#comment"), "card lost on the train"))
	b.shot("revoke-1-reason")
	b.do("revoke: confirm page", chromedp.Click(css("#next")), chromedp.WaitVisible(css("#confirm")))
	if got := b.text("#confirm-text"); !strings.Contains(got, second1) || !strings.Contains(got, "alice@example.org") {
		t.Fatalf("confirmation does not name user and serial: %q", got)
	}
	b.shot("revoke-2-confirm")
	b.do("revoke: do it", chromedp.Click(css("#confirm")), chromedp.WaitVisible(css("#crl-number")))
	b.shot("revoke-3-done")
	if n := b.text("#crl-number"); n == "" || n == "0" {
		t.Fatalf("CRL number after revocation: %q", n)
	}
	if got := b.text("#notice"); !strings.Contains(got, "5s") {
		t.Fatalf("revocation notice does not say when fronts see it: %q", got)
	}
	assertRevoked(t, u, second1, true)
	front.waitRevoked(t, live, "519283")

	// A mailbox the CA refuses, on a token that holds a credential: the
	// page says why, and the token keeps what it had.
	b.do("refused: mailbox", chromedp.Navigate(u.base+"/enroll?token="+serial), chromedp.WaitVisible(css("#user")),
		chromedp.SendKeys(css("#user"), "bob@other.example.com"), chromedp.Click(css("#next")), chromedp.WaitVisible(css("#replace")),
		chromedp.SendKeys(css("#pin"), "519283"), chromedp.SendKeys(css("#new_pin"), "519283"), chromedp.SendKeys(css("#new_pin2"), "519283"),
		chromedp.Click(css("#replace")), chromedp.Click(css("#start")), chromedp.WaitVisible(css("#job-error")))
	b.shot("enroll-refused")
	if got := b.text("#job-error"); !strings.Contains(got, "The CA refused") || !strings.Contains(got, "other.example.com") {
		t.Fatalf("refusal message: %q", got)
	}
	assertOnToken(t, u, "519283", second1)

	b.do("status", chromedp.Navigate(u.base+"/status"), chromedp.WaitVisible(css("#checks")))
	b.shot("status")
	if got := b.text("#overall"); !strings.Contains(got, "All is well") {
		t.Fatalf("status: %q", b.text("#checks"))
	}
	b.do("login page", chromedp.Navigate(u.base+"/login?token=wrong"), chromedp.WaitVisible(css("#error")))
	b.shot("login-refused")
}

func assertOnToken(t *testing.T, u *testUI, pin, serial string) {
	t.Helper()
	var certs, keys int
	for _, o := range u.tokenObjects(t, pin) {
		switch {
		case o.Class == pkcs11.ClassCertificate && o.Cert != nil && !o.Cert.IsCA:
			certs++
			if got := pkcs11.SerialHex(o.Cert.SerialNumber); !sameSerial(got, serial) {
				t.Fatalf("token holds certificate %s, want %s", got, serial)
			}
		case o.Class == pkcs11.ClassPrivateKey:
			keys++
		}
	}
	if certs != 1 || keys != 1 {
		t.Fatalf("token holds %d user certificates and %d private keys, want one each", certs, keys)
	}
}

func assertRevoked(t *testing.T, u *testUI, serial string, want bool) {
	t.Helper()
	list, err := u.srv.admin.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if sameSerial(c.Serial, serial) {
			if got := c.Status == "revoked"; got != want {
				t.Fatalf("certificate %s status %q, want revoked=%v", serial, c.Status, want)
			}
			return
		}
	}
	t.Fatalf("the CA does not list %s", serial)
}
