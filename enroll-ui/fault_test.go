package enrollui

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imapgate/imapgate/pkcs11"
	"github.com/imapgate/imapgate/testenv"
)

// TestFaultMessages: the faults SoftHSM2 cannot produce — an expired PIN,
// a PIN try counter running down, a locked PIN, a full token, a token pulled out in the middle
// of an enrollment — made by p11fault in front of the real SoftHSM2
// (testenv.NewP11Fault), each give their message on the page, and leave the
// token clean: the credential it had intact, no key without a certificate
// once it is enrolled again.
func TestFaultMessages(t *testing.T) {
	u := startFaultUI(t, nil)
	csrf := u.login(t)
	const wrong, pin = "000999", "735194"
	set := func(f testenv.Fault) { u.fault.Set(t, f) }

	// An expired PIN (a factory PIN the card wants changed): the Tokens page
	// says so, and a PIN change goes through.
	set(testenv.Fault{Mode: testenv.FaultPINExpired})
	u.waitRow(t, "default PIN still set")
	if a := u.post(t, "/pin/change", u.form(csrf, "auth", u.tok.PIN, "new_pin", "482915", "new_pin2", "482915")); a.status != http.StatusOK ||
		!strings.Contains(a.body, "The PIN was changed") {
		t.Fatalf("change an expired PIN: %d\n%s", a.status, a.body)
	}
	u.tokenObjects(t, "482915")

	// The PIN counter: the Tokens page shows it, a wrong PIN says what is
	// left, the last wrong one locks.
	set(testenv.Fault{Mode: testenv.FaultPINCountLow})
	u.waitRow(t, "wrong PIN entered")
	msg := u.runJob(t, u.enrollForm(csrf, "pin", wrong))
	if !strings.Contains(msg, "Wrong PIN, and the token has one try left: one more wrong PIN locks it") {
		t.Fatalf("wrong PIN with the counter low: %s", msg)
	}
	u.waitRow(t, "1 PIN try left")
	msg = u.runJob(t, u.enrollForm(csrf, "pin", wrong))
	if !strings.Contains(msg, "The PIN is locked. Unblock it with the SO PIN") || !strings.Contains(msg, "now locked") {
		t.Fatalf("wrong PIN on the final try: %s", msg)
	}
	u.waitRow(t, "PIN locked")

	// A locked PIN: enrolling needs the SO PIN, a PIN change cannot be done;
	// the SO PIN sets the new PIN and the enrollment goes through.
	for _, c := range []struct {
		name, path string
		kv         []string
		want       string
	}{
		{"enroll without the SO PIN", "/enroll/start", []string{"pin", u.tok.PIN}, "The token's PIN is locked: type the SO PIN"},
		{"PIN change", "/pin/change", []string{"auth", u.tok.PIN}, "The PIN is locked. Unblock it with the SO PIN"},
	} {
		form := u.enrollForm(csrf, c.kv...)
		a := u.post(t, c.path, form)
		if a.status != http.StatusLocked || !strings.Contains(htmlUnescape(a.body), c.want) {
			t.Fatalf("%s on a locked token: %d, want 423 saying %q:\n%s", c.name, a.status, c.want, a.body)
		}
	}
	if msg := u.runJob(t, u.enrollForm(csrf, "pin", "", "so_pin", u.tok.SOPIN, "new_pin", pin, "new_pin2", pin)); msg != "" {
		t.Fatalf("enroll a locked token with the SO PIN: %s", msg)
	}
	u.waitRow(t, "enrolled")
	first := u.userCert(t, pin)

	// Faults on a token that holds alice's credential: each replacement
	// fails with its message, and alice's credential stays.
	replace := func(kv ...string) string {
		return u.runJob(t, u.enrollForm(csrf, append([]string{"pin", pin, "new_pin", pin, "new_pin2", pin, "replace", "yes"}, kv...)...))
	}
	for _, c := range []struct {
		name  string
		fault testenv.Fault
		want  []string
		not   []string
	}{
		{"full: no room for the key", testenv.Fault{Mode: testenv.FaultMemoryFull},
			[]string{"The token is full. Wipe old objects (imapgate token wipe) or use another token", "no objects were written"}, []string{"The CA had issued"}},
		{"full: no room for the certificate", testenv.Fault{Mode: testenv.FaultMemoryFull, On: []string{"C_CreateObject"}},
			[]string{"The token is full", "the new key was removed from the token again", "The CA had issued certificate"}, nil},
		{"pulled out at the key generation", testenv.Fault{Mode: testenv.FaultRemoveAfter, On: []string{"C_GenerateKeyPair"}, RV: 0xB3},
			[]string{"The token was pulled out or is not in the reader. Insert it and start again"}, []string{"enrolling the token again removes it", "The CA had issued"}},
	} {
		set(c.fault)
		msg := replace()
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Fatalf("%s: the page does not say %q: %s", c.name, w, msg)
			}
		}
		for _, w := range c.not {
			if strings.Contains(msg, w) {
				t.Fatalf("%s: the page says %q: %s", c.name, w, msg)
			}
		}
		u.fault.Clear(t)
		assertOnToken(t, u, pin, first)
	}

	// Pulled out after the CA issued, before the certificate was written:
	// the page says so; put back, the token holds alice's credential and the
	// stray key, and enrolling it again removes the key.
	set(testenv.Fault{Mode: testenv.FaultRemoveAfter, On: []string{"C_CreateObject"}})
	msg = replace()
	for _, w := range []string{"The token was pulled out or is not in the reader. Insert it and start again",
		"The new key could not be removed while the token was out. Put the token back", "enrolling the token again removes it too",
		"The CA had issued certificate", "The token's PIN is already the new one"} {
		if !strings.Contains(msg, w) {
			t.Fatalf("pulled out before the certificate: the page does not say %q: %s", w, msg)
		}
	}
	u.waitRowGone(t)
	u.fault.Clear(t)
	u.waitRow(t, "Remove the leftover key")
	u.waitRow(t, first)
	// A UI restarted since has no record of the key: the row still flags
	// it, and the next enrollment removes it.
	k, _ := u.srv.left.get(u.tok.Serial)
	u.srv.left.drop(u.tok.Serial, k.ID)
	u.srv.tokens.invalidate(u.tok.Serial)
	u.waitRow(t, "unfinished enrollment: enroll again")
	if keys := countKeys(u.tokenObjects(t, pin)); keys != 2 {
		t.Fatalf("put back: %d private keys, want alice's and the stray one", keys)
	}
	a := u.post(t, "/enroll/start", u.enrollForm(csrf, "pin", pin, "new_pin", pin, "new_pin2", pin, "replace", "yes"))
	if a.status != http.StatusSeeOther {
		t.Fatalf("enroll again: %d %s", a.status, a.body)
	}
	rec := u.followJob(t, a.header.Get("Location"))
	if !strings.Contains(rec, "left by an interrupted enrollment") {
		t.Fatalf("the receipt does not say the stray key was removed:\n%s", rec)
	}
	second := u.userCert(t, pin)
	if second == first {
		t.Fatal("the token still holds alice's first certificate")
	}
	assertOnToken(t, u, pin, second)
	if body := u.get(t, "/tokens/fragment").body; strings.Contains(body, "unfinished enrollment") {
		t.Fatalf("the token enrolled again still shows an unfinished enrollment:\n%s", body)
	}
	if body := u.get(t, "/tokens/fragment").body; strings.Contains(body, "leftover key") {
		t.Fatalf("the token enrolled again still offers to remove a leftover key:\n%s", body)
	}
	if strings.Contains(u.logs.String(), pin) || strings.Contains(u.logs.String(), wrong) {
		t.Fatal("a PIN reached the log")
	}
}

var issuedRE = regexp.MustCompile(`The CA had issued certificate ([0-9A-F]+) `)

// TestLeftKeyRemoval: a token pulled out after the CA issued, before the
// certificate was written, keeps the new key; put back, its row offers
// "Remove the leftover key" at once (the UI recorded the key's CKA_ID and
// public key, and sees its public key object without a login). Removing it
// needs the PIN, as a private key is invisible before a login, and a CSRF
// token; it takes that key pair and nothing else (alice's credential stays),
// is written to the audit log and the CA's trail of the certificate that
// never reached the token, and says what happened.
func TestLeftKeyRemoval(t *testing.T) {
	u := startFaultUI(t, nil)
	csrf := u.login(t)
	const pin = "735194"
	if msg := u.runJob(t, u.enrollForm(csrf)); msg != "" {
		t.Fatalf("enroll alice: %s", msg)
	}
	first := u.userCert(t, pin)
	u.fault.Set(t, testenv.Fault{Mode: testenv.FaultRemoveAfter, On: []string{"C_CreateObject"}})
	msg := u.runJob(t, u.enrollForm(csrf, "pin", pin, "replace", "yes"))
	for _, w := range []string{"The token was pulled out", "The new key could not be removed while the token was out. Put the token back",
		"offers “Remove the leftover key”", "asks for the token's PIN", "The CA had issued certificate"} {
		if !strings.Contains(msg, w) {
			t.Fatalf("pulled out before the certificate: the page does not say %q: %s", w, msg)
		}
	}
	m := issuedRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("no issued serial in %q", msg)
	}
	issued := m[1]
	u.waitRowGone(t)
	if a := u.post(t, "/tokens/leftover", u.form(csrf, "pin", pin)); a.status != http.StatusNotFound {
		t.Fatalf("remove with the token out: %d, want 404\n%s", a.status, a.body)
	}
	u.fault.Clear(t)
	u.waitRow(t, "leftover key of an interrupted enrollment")
	u.waitRow(t, "Remove the leftover key")
	if body := u.get(t, "/tokens/fragment").body; strings.Contains(body, "unfinished enrollment: enroll again") {
		t.Fatalf("the recorded leftover still says enroll again:\n%s", body)
	}
	page := u.get(t, "/tokens/leftover?token="+u.tok.Serial)
	if page.status != http.StatusOK || !strings.Contains(page.body, `id="l-pin"`) || !strings.Contains(page.body, issued) {
		t.Fatalf("the leftover page: %d\n%s", page.status, page.body)
	}
	for _, c := range []struct {
		name   string
		form   url.Values
		status int
		want   string
	}{
		{"CSRF missing", url.Values{"token": {u.tok.Serial}, "pin": {pin}}, http.StatusForbidden, "not sent by this UI"},
		{"CSRF wrong", u.form("x"+csrf[1:], "pin", pin), http.StatusForbidden, "not sent by this UI"},
		{"no PIN", u.form(csrf), http.StatusBadRequest, "Type the token's PIN"},
		{"wrong PIN", u.form(csrf, "pin", "000999"), http.StatusBadRequest, "Wrong PIN"},
	} {
		a := u.post(t, "/tokens/leftover", c.form)
		if a.status != c.status || !strings.Contains(htmlUnescape(a.body), c.want) {
			t.Fatalf("%s: %d, want %d saying %q\n%s", c.name, a.status, c.status, c.want, a.body)
		}
		if keys := countKeys(u.tokenObjects(t, pin)); keys != 2 {
			t.Fatalf("%s: %d private keys, want alice's and the leftover", c.name, keys)
		}
	}
	a := u.post(t, "/tokens/leftover", u.form(csrf, "pin", pin))
	if body := htmlUnescape(a.body); a.status != http.StatusOK || !strings.Contains(body, "of the interrupted enrollment was removed from token") ||
		!strings.Contains(body, "nothing else on the token was touched") || !strings.Contains(body, "The CA had issued certificate "+issued) {
		t.Fatalf("remove the leftover key: %d\n%s", a.status, a.body)
	}
	assertOnToken(t, u, pin, first)
	if body := u.get(t, "/tokens/fragment").body; strings.Contains(body, "leftover key") || strings.Contains(body, "unfinished enrollment") {
		t.Fatalf("after the removal the row still flags the key:\n%s", body)
	}
	if a := u.post(t, "/tokens/leftover", u.form(csrf, "pin", pin)); a.status != http.StatusNotFound || !strings.Contains(a.body, "nothing was removed") {
		t.Fatalf("remove again: %d, want 404\n%s", a.status, a.body)
	}
	logs := u.logs.String()
	if !strings.Contains(logs, `"action":"remove-leftover-key"`) || !strings.Contains(logs, `"serial":"`+issued+`"`) || strings.Contains(logs, pin) {
		t.Fatalf("the audit log lacks the removal, or holds a PIN:\n%s", logs)
	}
	// The CA's trail of the certificate that never reached the token.
	var trail string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); waitABit() {
		if trail = u.get(t, "/certs/"+issued).body; strings.Contains(trail, "helpdesk-remove-leftover-key") {
			return
		}
	}
	t.Fatalf("the CA's trail of %s lacks the removal:\n%s", issued, trail)
}

// TestBrowserFaults drives faults through real headless Chromium: the
// Tokens page, left open, notices by itself (its script re-reads the list)
// the token pulled out and put back, each within two seconds; a locked PIN
// shows as a badge; a token pulled out mid-enrollment gives its message on
// the progress page; put back, the Tokens page offers to remove the key it
// left, which the pages do with the PIN, and the next enrollment goes
// through.
func TestBrowserFaults(t *testing.T) {
	u := startFaultUI(t, nil)
	b := startBrowser(t)
	row := `tr[data-serial="` + u.tok.Serial + `"]`
	b.do("log in and see the token", chromedp.Navigate(u.srv.LoginURL()), chromedp.WaitVisible(css(row)))

	var worst time.Duration
	for i := 0; i < 3; i++ {
		for _, out := range []bool{true, false} {
			f, what, wait := testenv.Fault{Mode: testenv.FaultNone}, "put back", chromedp.WaitVisible(css(row))
			if out {
				f, what, wait = testenv.Fault{Mode: testenv.FaultHidden}, "pulled out", chromedp.WaitNotPresent(css(row))
			}
			u.fault.Set(t, f)
			start := time.Now()
			b.do("token "+what, wait)
			d := time.Since(start)
			worst = max(worst, d)
			if d > 2*time.Second {
				t.Errorf("the Tokens page took %v to show the token %s, more than two seconds", d, what)
			}
			if out && !strings.Contains(b.text("#token-rows"), "No token in the reader") {
				t.Errorf("with the token out the page says: %q", b.text("#token-rows"))
			}
		}
	}
	t.Logf("the open Tokens page showed a token pulled out or put back within %v (worst of 6)", worst)

	u.fault.Set(t, testenv.Fault{Mode: testenv.FaultPINLocked})
	b.do("a locked PIN shows", chromedp.WaitVisible(css(row+` .badge.bad`)))
	if got := b.text(row); !strings.Contains(got, "PIN locked") {
		t.Fatalf("locked token row: %q", got)
	}
	u.fault.Clear(t)
	b.do("the SO unblocked it elsewhere", chromedp.WaitNotPresent(css(row+` .badge.bad`)))

	// Pulled out once the CA issued, before the certificate is written.
	u.fault.Set(t, testenv.Fault{Mode: testenv.FaultRemoveAfter, On: []string{"C_CreateObject"}})
	enroll := func(what string, pin string, until string) {
		b.do(what, chromedp.Navigate(u.base+"/"), chromedp.WaitVisible(css(row)),
			chromedp.Click(css(row+` a[href^="/enroll"]`)), chromedp.WaitVisible(css("#user")),
			chromedp.SendKeys(css("#user"), "alice@example.org"), chromedp.Click(css("#next")), chromedp.WaitVisible(css("#new_pin")),
			chromedp.SendKeys(css("#pin"), pin), chromedp.SendKeys(css("#new_pin"), "735194"), chromedp.SendKeys(css("#new_pin2"), "735194"),
			chromedp.Click(css("#start")), chromedp.WaitVisible(css(until)))
	}
	enroll("enroll, token pulled out", u.tok.PIN, "#job-error")
	if got := b.text("#job-error"); !strings.Contains(got, "The token was pulled out or is not in the reader. Insert it and start again") ||
		!strings.Contains(got, "enrolling the token again removes it") {
		t.Fatalf("pulled out mid-enrollment, the page says: %q", got)
	}
	if got := b.text("#job-error"); !strings.Contains(got, "offers “Remove the leftover key”") {
		t.Fatalf("pulled out mid-enrollment, the page does not point to the removal: %q", got)
	}
	// Put back, the open Tokens page offers the removal by itself.
	b.do("back to the tokens", chromedp.Navigate(u.base+"/"), chromedp.WaitNotPresent(css(row)))
	u.fault.Clear(t)
	leftover := row + ` a[href^="/tokens/leftover"]`
	b.do("put back: the leftover key shows", chromedp.WaitVisible(css(leftover)))
	if got := b.text(row); !strings.Contains(got, "leftover key of an interrupted enrollment") || !strings.Contains(got, "blank") {
		t.Fatalf("the token put back: %q", got)
	}
	if keys := countKeys(u.tokenObjects(t, "735194")); keys != 1 {
		t.Fatalf("put back: %d private keys, want the stray one", keys)
	}
	b.do("remove the leftover key", chromedp.Click(css(leftover)), chromedp.WaitVisible(css("#l-pin")),
		chromedp.SendKeys(css("#l-pin"), "735194"), chromedp.Click(css("#l-go")), chromedp.WaitVisible(css("#notice")))
	if got := b.text("#notice"); !strings.Contains(got, "was removed from token") || !strings.Contains(got, "nothing else on the token was touched") {
		t.Fatalf("after the removal the page says: %q", got)
	}
	if keys := countKeys(u.tokenObjects(t, "735194")); keys != 0 {
		t.Fatalf("after the removal: %d private keys, want none", keys)
	}
	enroll("enroll again", "735194", "#receipt")
	if got := b.text("#receipt"); strings.Contains(got, "left by an interrupted enrollment") {
		t.Fatalf("the receipt notes a stray key the removal had taken: %q", got)
	}
	assertOnToken(t, u, "735194", b.text("#r-serial"))
}

// waitRow waits, as long as the Tokens page may take to notice a change
// (two seconds), for the token's row to say want.
func (u *testUI) waitRow(t *testing.T, want string) {
	t.Helper()
	var body string
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); waitABit() {
		body = u.get(t, "/tokens/fragment").body
		if i := strings.Index(body, `data-serial="`+u.tok.Serial+`"`); i >= 0 && strings.Contains(body[i:], want) {
			return
		}
	}
	t.Fatalf("within two seconds the token's row does not say %q:\n%s", want, body)
}

// waitRowGone waits up to two seconds for the token to leave the list.
func (u *testUI) waitRowGone(t *testing.T) {
	t.Helper()
	var body string
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); waitABit() {
		if body = u.get(t, "/tokens/fragment").body; !strings.Contains(body, u.tok.Serial) {
			return
		}
	}
	t.Fatalf("within two seconds the token pulled out is still listed:\n%s", body)
}

// userCert is the serial of the one user certificate on the token.
func (u *testUI) userCert(t *testing.T, pin string) string {
	t.Helper()
	for _, o := range u.tokenObjects(t, pin) {
		if o.Class == pkcs11.ClassCertificate && o.Cert != nil && !o.Cert.IsCA {
			return pkcs11.SerialHex(o.Cert.SerialNumber)
		}
	}
	t.Fatal("the token holds no user certificate")
	return ""
}

func countKeys(objs []pkcs11.Object) int {
	n := 0
	for _, o := range objs {
		if o.Class == pkcs11.ClassPrivateKey {
			n++
		}
	}
	return n
}
