package enrollui

import (
	"strings"
	"testing"
)

// FuzzNormSerial: a pasted serial is either refused or hex of even length.
func FuzzNormSerial(f *testing.F) {
	for _, s := range []string{"0A:1b:2C", "abc", " 7CC84F0054902A2D4A77352EE1EF66EB ", "zz", "", "-", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := normSerial(in)
		if out == "" {
			return
		}
		if len(out)%2 != 0 || strings.Trim(out, "0123456789ABCDEF") != "" {
			t.Fatalf("normSerial(%q) = %q", in, out)
		}
	})
}

// FuzzCheckMailbox: an accepted mailbox is one plain ASCII address.
func FuzzCheckMailbox(f *testing.F) {
	for _, s := range []string{"alice@example.org", "Alice <alice@example.org>", "a@b", "\"a b\"@example.org", "a@b.c\x00", "ä@example.org"} {
		f.Add(s)
	}
	s := &Server{cfg: &Config{}}
	f.Fuzz(func(t *testing.T, in string) {
		user, err := s.checkMailbox(in)
		if err != nil {
			return
		}
		if strings.Count(user, "@") < 1 || strings.ContainsAny(user, " <>\t\r\n") {
			t.Fatalf("checkMailbox(%q) accepted %q", in, user)
		}
		for _, r := range user {
			if r < 0x21 || r > 0x7e {
				t.Fatalf("checkMailbox(%q) accepted non-ASCII %q", in, user)
			}
		}
	})
}
