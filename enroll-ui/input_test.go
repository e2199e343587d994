package enrollui

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/pkcs11"
)

// TestBadInput: every kind of bad input and fault gives its message on the
// page, and leaves the token as it was (PIN unchanged, no key left behind).
//
// The faults SoftHSM2 cannot produce (a locked PIN, a PIN try counter, a
// full token, a token pulled out) are in TestFaultMessages.
func TestBadInput(t *testing.T) {
	u := startUI(t, nil)
	csrf := u.login(t)
	f := func(kv ...string) url.Values { return u.form(csrf, kv...) }
	start := func(kv ...string) url.Values { return u.enrollForm(csrf, kv...) }
	cases := []struct {
		name   string
		path   string
		form   url.Values
		status int
		want   string
	}{
		{"PIN change: no current PIN", "/pin/change", f("new_pin", "735194", "new_pin2", "735194"), 400, "Type the current PIN"},
		{"PIN change: new PINs differ", "/pin/change", f("auth", u.tok.PIN, "new_pin", "735194", "new_pin2", "735195"), 400, "The two new PINs differ"},
		{"PIN change: too short", "/pin/change", f("auth", u.tok.PIN, "new_pin", "73519", "new_pin2", "73519"), 400, "at least 6 characters"},
		{"PIN change: one digit", "/pin/change", f("auth", u.tok.PIN, "new_pin", "777777", "new_pin2", "777777"), 400, "one digit repeated"},
		{"PIN change: default PIN", "/pin/change", f("auth", u.tok.PIN, "new_pin", "12345678", "new_pin2", "12345678"), 400, "factory default"},
		{"PIN change: wrong current PIN", "/pin/change", f("auth", "999999", "new_pin", "735194", "new_pin2", "735194"), 400, "Wrong PIN"},
		{"PIN unblock: wrong SO PIN", "/pin/unblock", f("auth", "87654321", "new_pin", "735194", "new_pin2", "735194"), 400, "Wrong PIN"},
		{"PIN: unknown token", "/pin/change", url.Values{"csrf": {csrf}, "token": {"nosuchserial"}, "auth": {"123456"}}, 404, "No token with serial"},
		{"mailbox: empty", "/enroll/user", f("user", ""), 400, "Type the user&#39;s mailbox"},
		{"mailbox: with a name", "/enroll/user", f("user", "Alice <alice@example.org>"), 400, "not a mailbox address"},
		{"mailbox: spaces", "/enroll/user", f("user", "alice smith@example.org"), 400, "not a mailbox address"},
		{"mailbox: no domain dot", "/enroll/user", f("user", "alice@intranet"), 400, "has no dot"},
		{"enroll: no PIN", "/enroll/start", start("pin", ""), 400, "current PIN"},
		{"enroll: new PINs differ", "/enroll/start", start("new_pin2", "735195"), 400, "differ"},
		{"enroll: default new PIN", "/enroll/start", start("new_pin", "123456", "new_pin2", "123456"), 400, "factory default"},
		{"enroll: bad key type", "/enroll/start", start("key_type", "dsa-1024"), 400, "Pick a key type"},
		{"enroll: bad mailbox", "/enroll/start", start("user", "alice"), 400, "not a mailbox"},
		{"revoke: bad serial", "/revoke", f("serial", "not-hex", "reason", "keyCompromise"), 400, "Type the certificate"},
		{"revoke: unknown serial", "/revoke", f("serial", "ABCDEF", "reason", "keyCompromise"), 404, "knows no user certificate"},
		{"revoke: not confirmed", "/revoke/do", f("serial", "ABCDEF", "reason", "keyCompromise"), 400, "not confirmed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := u.post(t, tc.path, tc.form)
			if a.status != tc.status || !strings.Contains(a.body, tc.want) {
				t.Fatalf("%d, want %d with %q; body:\n%s", a.status, tc.status, tc.want, a.body)
			}
			for _, pin := range []string{"735194", "735195", "999999", "87654321"} {
				if strings.Contains(a.body, pin) {
					t.Fatalf("the page echoes a PIN (%s)", pin)
				}
			}
		})
	}
	u.tokenObjects(t, u.tok.PIN) // the PIN is still the old one

	t.Run("mailbox the CA refuses", func(t *testing.T) {
		msg := u.runJob(t, start("user", "bob@other.example.com"))
		if !strings.Contains(msg, "The CA refused") || !strings.Contains(msg, "other.example.com") {
			t.Fatalf("job: %s", msg)
		}
		u.assertNoKey(t, "735194")
	})
	t.Run("CA unreachable", func(t *testing.T) {
		u.ca.Stop()
		a := u.post(t, "/enroll/user", f("user", "alice@example.org"))
		if a.status != http.StatusBadGateway || !strings.Contains(a.body, "nothing was written") {
			t.Fatalf("mailbox step with the CA down: %d %s", a.status, a.body)
		}
		msg := u.runJob(t, start("pin", "735194", "new_pin", "482915", "new_pin2", "482915"))
		if !strings.Contains(msg, "cannot reach the CA") || !strings.Contains(msg, "removed") {
			t.Fatalf("job with the CA down: %s", msg)
		}
		u.assertNoKey(t, "482915")
		if a := u.get(t, "/status"); !strings.Contains(a.body, "unreachable") || !strings.Contains(a.body, "Something needs action") {
			t.Fatalf("status with the CA down: %s", a.body)
		}
	})
	if strings.Contains(u.logs.String(), "735194") || strings.Contains(u.logs.String(), "482915") {
		t.Fatal("a PIN reached the log")
	}
}

// runJob posts the enrollment form, follows the job to its end and returns
// its error message ("" when it succeeded).
func (u *testUI) runJob(t *testing.T, form url.Values) string {
	t.Helper()
	a := u.post(t, "/enroll/start", form)
	if a.status != http.StatusSeeOther {
		t.Fatalf("enroll/start: %d %s", a.status, a.body)
	}
	body := u.followJob(t, a.header.Get("Location"))
	if m := jobErrRE.FindStringSubmatch(body); m != nil {
		return htmlUnescape(m[1])
	}
	if !strings.Contains(body, `id="receipt"`) {
		t.Fatalf("job ended with neither receipt nor error: %s", body)
	}
	return ""
}

// followJob reloads the job page at loc until the job ends, and returns
// the last page.
func (u *testUI) followJob(t *testing.T, loc string) string {
	t.Helper()
	for {
		a := u.get(t, loc)
		if a.status != http.StatusOK {
			t.Fatalf("%s: %d", loc, a.status)
		}
		if !strings.Contains(a.body, `http-equiv="refresh"`) {
			return a.body
		}
		waitABit()
	}
}

// assertNoKey checks the token holds no private key (a failed enrollment
// removed its key).
func (u *testUI) assertNoKey(t *testing.T, pin string) {
	t.Helper()
	for _, o := range u.tokenObjects(t, pin) {
		if o.Class == pkcs11.ClassPrivateKey || o.Class == pkcs11.ClassPublicKey {
			t.Fatalf("the token still holds %s %q", o.Class, o.Label)
		}
	}
}

// TestExplain: each error pkcs11 marks gets its sentence and status.
func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		want   string
	}{
		{pkcs11.ErrPINLocked, http.StatusLocked, "Unblock it with the SO PIN"},
		{pkcs11.ErrPINIncorrect, http.StatusBadRequest, "Wrong PIN"},
		{fmt.Errorf("%w (%w)", pkcs11.ErrPINIncorrect, pkcs11.ErrPINFinalTry), http.StatusBadRequest, "one try left"},
		{pkcs11.ErrTokenGone, http.StatusNotFound, "pulled out"},
		{pkcs11.ErrTokenFull, http.StatusInsufficientStorage, "The token is full"},
	} {
		if got := explain(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("explain(%v) = %q, want %q", tc.err, got, tc.want)
		}
		if got := statusFor(tc.err); got != tc.status {
			t.Errorf("statusFor(%v) = %d, want %d", tc.err, got, tc.status)
		}
	}
}
