package mtls

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

// FuzzReadTagged: whatever a backend sends, readTagged never panics, stops at the line
// tagged g2 or at the first BYE, and reports a BYE as an answer (errBackendAnswer).
func FuzzReadTagged(f *testing.F) {
	for _, seed := range []string{
		"g2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n",
		"* CAPABILITY IMAP4rev1\r\ng1 OK stale\r\ng2 NO [AUTHENTICATIONFAILED] no\r\n",
		"* BYE Input buffer full\r\n",
		"+ go ahead\r\ng2 BAD\r\n",
		"g2 OK [CAPABILITY unterminated\r\n",
		"g2\r\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := readTagged(bufio.NewReader(strings.NewReader(in)), "g2")
		if err != nil {
			var a *errBackendAnswer
			if errors.As(err, &a) && !strings.Contains(strings.ToUpper(in), "BYE") {
				t.Fatalf("a BYE answer from input without BYE: %q", in)
			}
			return
		}
		if !strings.Contains(in, "g2 ") {
			t.Fatalf("a tagged answer %+v from input without the tag: %q", r, in)
		}
		if strings.ContainsRune(r.text, '\n') {
			t.Fatalf("a line break in the answer %+v", r)
		}
		if printable(r.caps) != r.caps {
			t.Fatalf("capabilities to relay hold a control character: %q", r.caps)
		}
	})
}
