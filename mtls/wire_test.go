package mtls

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func parseOne(input string) (*command, []string, error) {
	var conts []string
	r := &wireReader{br: bufio.NewReaderSize(strings.NewReader(input), 1024), lim: defaultWireLimits}
	r.cont = func() error { conts = append(conts, "+"); return nil }
	cmd, err := r.ReadCommand()
	return cmd, conts, err
}

func TestReadCommand(t *testing.T) {
	s := func(v string) arg { return arg{kind: argString, s: v} }
	a := func(v string) arg { return arg{kind: argAtom, s: v} }
	for _, tc := range []struct {
		name  string
		in    string
		tag   string
		cmd   string
		args  []arg
		conts int
	}{
		{"capability", "a1 CAPABILITY\r\n", "a1", "CAPABILITY", nil, 0},
		{"lower_case", "82 authenticate PLAIN\r\n", "82", "AUTHENTICATE", []arg{a("PLAIN")}, 0},
		{"bare_lf", "a noop\n", "a", "NOOP", nil, 0},
		{"login_atoms", "a LOGIN alice@example.org pw]x\r\n", "a", "LOGIN", []arg{a("alice@example.org"), a("pw]x")}, 0},
		{"quoted_escapes", `a LOGIN "al\"ice" "p\\w"` + "\r\n", "a", "LOGIN", []arg{s(`al"ice`), s(`p\w`)}, 0},
		{"empty_quoted", `a LOGIN "" ""` + "\r\n", "a", "LOGIN", []arg{s(""), s("")}, 0},
		{"literal_sync", "a LOGIN {5}\r\nalice {3}\r\np w\r\n", "a", "LOGIN", []arg{s("alice"), s("p w")}, 2},
		{"literal_plus", "a LOGIN {5+}\r\nalice {3+}\r\np\r\n\r\n", "a", "LOGIN", []arg{s("alice"), s("p\r\n")}, 0},
		{"literal_empty", "a LOGIN {0}\r\n {0}\r\n\r\n", "a", "LOGIN", []arg{s(""), s("")}, 2},
		{"id_list", `a ID ("name" "tb" "version" NIL)` + "\r\n", "a", "ID", []arg{{kind: argList, list: []arg{s("name"), s("tb"), s("version"), {kind: argNil}}}}, 0},
		{"id_nil", "a ID nil\r\n", "a", "ID", []arg{{kind: argNil}}, 0},
		{"empty_list", "a ID ()\r\n", "a", "ID", []arg{{kind: argList}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, conts, err := parseOne(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if cmd.tag != tc.tag || cmd.name != tc.cmd || !reflect.DeepEqual(cmd.args, tc.args) || len(conts) != tc.conts {
				t.Fatalf("got %+v (%d continuations)", cmd, len(conts))
			}
		})
	}
}

func TestReadCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		fatal bool
		tag   string
		want  string
	}{
		{"no_tag", " NOOP\r\n", false, "", "expected a tag"},
		{"plus_tag", "+ NOOP\r\n", false, "", "expected a tag"},
		{"no_command", "a\r\n", false, "a", "expected a space"},
		{"two_spaces", "a  NOOP\r\n", false, "a", "expected a command"},
		{"unterminated_quote", `a LOGIN "x` + "\r\n", false, "a", "unterminated quoted"},
		{"bad_escape", `a LOGIN "\n"` + "\r\n", false, "a", "invalid escape"},
		{"literal_not_at_end", "a LOGIN {5} x\r\n", false, "a", "must end the line"},
		{"literal_bad_length", "a LOGIN {x}\r\n", false, "a", "invalid literal length"},
		{"literal_huge_length", "a LOGIN {99999999999}\r\n", false, "a", "invalid literal length"},
		{"literal_too_big", "a LOGIN {5000}\r\n", false, "a", "over the limit"},
		{"literal_plus_too_big", "a LOGIN {5000+}\r\n", true, "", "over the limit"},
		{"nested_list", "a ID ((x))\r\n", false, "a", "nested lists"},
		{"unterminated_list", "a ID (\"x\"\r\n", false, "a", "unterminated list"},
		{"too_many_args", "a X" + strings.Repeat(" x", 100) + "\r\n", false, "a", "too many arguments"},
		{"line_too_long", "a LOGIN " + strings.Repeat("x", 9000) + "\r\n", true, "", "line longer"},
		{"too_many_literals", "a X {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx\r\n", true, "", "over the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseOne(tc.in)
			var we *errWire
			var fe *errFatal
			switch {
			case errors.As(err, &we):
				if tc.fatal || we.tag != tc.tag || !strings.Contains(we.text, tc.want) {
					t.Fatalf("got BAD tag=%q %q", we.tag, we.text)
				}
			case errors.As(err, &fe):
				if !tc.fatal || !strings.Contains(fe.text, tc.want) {
					t.Fatalf("got fatal %q", fe.text)
				}
			default:
				t.Fatalf("got %v", err)
			}
		})
	}
}

// TestReadCommandSkipsLiteralsAfterError: a command that fails to parse on a line
// ending in a non-synchronising literal has that literal (and any chained after it)
// read and dropped, so its bytes — often a password — are never read as the next
// command. Over the limits the connection ends.
func TestReadCommandSkipsLiteralsAfterError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		fatal bool
	}{
		{"literal_plus", "a LOGIN \"alice\"x {20+}\r\nhunter2 CAPABILITY\r\n\r\nb NOOP\r\n", false},
		{"chained", "a LOGIN \"u\"x {3+}\r\nabc {4+}\r\nwxyz\r\nb NOOP\r\n", false},
		{"error_on_continuation_line", "a LOGIN {3+}\r\nabc x\"y {5+}\r\nhello\r\nb NOOP\r\n", false},
		{"sync_literal_not_requested", "a LOGIN \"u\"x {3}\r\nb NOOP\r\n", false},
		{"bad_literal_length", "a LOGIN {x} {7+}\r\nhunter2\r\nb NOOP\r\n", false},
		{"too_big", "a LOGIN \"u\"x {5000+}\r\n" + strings.Repeat("x", 5000) + "\r\nb NOOP\r\n", true},
		{"unreadable_length", "a LOGIN \"u\"x {1x+}\r\nb NOOP\r\n", true},
		{"too_many", "a X \"u\"x {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx\r\nb NOOP\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conts int
			r := &wireReader{br: bufio.NewReaderSize(strings.NewReader(tc.in), 1024), lim: defaultWireLimits}
			r.cont = func() error { conts++; return nil }
			_, err := r.ReadCommand()
			var we *errWire
			var fe *errFatal
			switch {
			case tc.fatal:
				if !errors.As(err, &fe) {
					t.Fatalf("got %v, want the connection to end", err)
				}
				return
			case !errors.As(err, &we) || we.tag != "a":
				t.Fatalf("got %v, want BAD for tag a", err)
			}
			cmd, err := r.ReadCommand()
			if err != nil || cmd.tag != "b" || cmd.name != "NOOP" || len(cmd.args) != 0 {
				t.Fatalf("next command: %+v, %v", cmd, err)
			}
			if conts != 0 {
				t.Fatalf("%d continuation requests for a failed command", conts)
			}
		})
	}
}

// FuzzReadCommand: the pre-auth parser never panics, never returns a command whose
// arguments exceed the limits, and always either parses or errors.
func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{
		"a1 CAPABILITY\r\n", "82 authenticate PLAIN\r\n", `a LOGIN "x\"y" {3}` + "\r\nabc\r\n",
		"a LOGIN {3+}\r\nabc {2}\r\nxy\r\n", `a ID ("name" "tb" "version" NIL)` + "\r\n", "a ID NIL\r\n",
		"* BAD\r\n", "a LOGIN {99999}\r\n", "\x00\xff\r\n", "a (((\r\n",
		"a LOGIN \"u\"x {20+}\r\nhunter2 CAPABILITY\r\n\r\nb NOOP\r\n", "a X \"\"x {1+}\r\ny {2+}\r\nzz\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r := &wireReader{br: bufio.NewReaderSize(strings.NewReader(in), 256), lim: defaultWireLimits, cont: func() error { return nil }}
		for i := 0; i < 8; i++ {
			cmd, err := r.ReadCommand()
			if err != nil {
				var we *errWire
				if errors.As(err, &we) {
					continue
				}
				return
			}
			if cmd.tag == "" || cmd.name == "" || len(cmd.args) > defaultWireLimits.MaxArgs {
				t.Fatalf("bad command %+v", cmd)
			}
			total := 0
			for _, a := range cmd.args {
				total += len(a.s)
				for _, m := range a.list {
					total += len(m.s)
				}
			}
			if total > defaultWireLimits.MaxCommand {
				t.Fatalf("command of %d bytes passed the limit", total)
			}
		}
	})
}

// TestBackendAtFault: which refusals blame the backend (not counted against the card).
func TestBackendAtFault(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"[UNAVAILABLE] Temporary authentication failure.", true},
		{"[PRIVACYREQUIRED] Plaintext authentication disallowed", true},
		{"[SERVERBUG] Internal error", true},
		{"[SYS/TEMP] Temporary failure", true},
		{"[ALERT] Client didn't present valid SSL certificate", true},
		{"[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.", true},
		{"Plaintext authentication disallowed on non-secure connections.", true},
		{"[AUTHENTICATIONFAILED] Authentication failed.", false},
		{"[AUTH] Authentication failed.", false},
		{"Authentication failed.", false},
		{"[ALERT] Account suspended.", false},
		{"[CONTACTADMIN] TLS is fine, ask your administrator", false},
		{"[SYS/PERM] Permanent failure", false},
	} {
		if got := backendAtFault(respCode(tc.text), tc.text); got != tc.want {
			t.Errorf("backendAtFault(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
}
