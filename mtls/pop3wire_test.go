package mtls

import (
	"strings"
	"testing"
)

// FuzzParsePOP3 feeds the POP3 pre-auth parser (the command line, then an AUTH PLAIN
// response): it never panics, a keyword it accepts is 3 or 4 letters in upper case,
// the argument is the rest of the line, and a PLAIN response it accepts has a login.
func FuzzParsePOP3(f *testing.F) {
	for _, s := range []string{"CAPA", "USER alice@example.org", "PASS a b c", "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
		"AUTH PLAIN =", "STLS", "quit", "XCLIENT ADDR=1.2.3.4", "AUTH", "US", "PASS \x00", "USER \xff\xfe", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := parsePOP3(line)
		if err == nil {
			if len(cmd.name) < 3 || len(cmd.name) > 4 || cmd.name != strings.ToUpper(cmd.name) {
				t.Fatalf("keyword %q from %q", cmd.name, line)
			}
			if want, _ := strings.CutPrefix(line[len(cmd.name):], " "); cmd.arg != want {
				t.Fatalf("argument %q from %q", cmd.arg, line)
			}
			if strings.ContainsAny(line, "\x00\r\n") {
				t.Fatalf("control character accepted in %q", line)
			}
		}
		_, user, _, r := decodePlain(line)
		if r == nil && user == "" {
			t.Fatalf("PLAIN response %q accepted without a login", line)
		}
	})
}

// TestPOP3Reply: the shared core's replies in POP3's words (RFC 3206 codes).
func TestPOP3Reply(t *testing.T) {
	for _, tc := range []struct {
		r    *Reply
		want string
	}{
		{errAuthFailed("x"), "-ERR [AUTH] Authentication failed.\r\n"},
		{errUnavailable(textBackendDown, "x"), "-ERR [SYS/TEMP] " + textBackendDown + "\r\n"},
		{byeRevoked, "-ERR [SYS/PERM] " + byeRevoked.Text + "\r\n"},
		{byeShutdown, "-ERR [SYS/TEMP] " + byeShutdown.Text + "\r\n"},
		{badPasswordTooLong, "-ERR " + badPasswordTooLong.Text + "\r\n"},
	} {
		if got := (pop3{}).reply(tc.r, ""); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.r, got, tc.want)
		}
	}
}
