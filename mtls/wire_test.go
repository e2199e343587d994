package mtls

import (
	"bufio"
	"crypto/x509"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
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

func TestBindIdentity(t *testing.T) {
	cert := &x509.Certificate{EmailAddresses: []string{"alice@Example.org"}}
	for _, tc := range []struct {
		name, authz, user string
		ok                bool
	}{
		{"exact", "", "alice@Example.org", true},
		{"domain_case", "", "alice@EXAMPLE.ORG", true},
		{"authz_same", "alice@example.org", "alice@example.org", true},
		{"local_case", "", "Alice@example.org", false},
		{"other_user", "", "bob@example.org", false},
		{"no_domain", "", "alice", false},
		{"authz_other", "bob@example.org", "alice@example.org", false},
		{"suffix_trick", "", "alice@example.org.evil", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := bindIdentity(cert, tc.authz, tc.user)
			if (why == "") != tc.ok {
				t.Fatalf("bindIdentity(%q, %q) = %q", tc.authz, tc.user, why)
			}
		})
	}
	if why := bindIdentity(&x509.Certificate{}, "", "alice@example.org"); why == "" {
		t.Fatal("a certificate without e-mail bound a login")
	}
}

// fail reserves a login and fails it, as a wrong password does.
func fail(t *testing.T, th *throttle, serial string, ip netip.Addr, cfg *Throttle, now time.Time) time.Duration {
	t.Helper()
	a, _, _, why := th.reserve(serial, ip, cfg, now)
	if a == nil {
		t.Fatalf("login %s from %s not admitted: %q", serial, ip, why)
	}
	return a.failed(cfg, now)
}

// locked is how long serial from ip is still locked out (0: not).
func locked(th *throttle, serial string, ip netip.Addr, cfg *Throttle, now time.Time) (time.Duration, string) {
	a, _, wait, why := th.reserve(serial, ip, cfg, now)
	if a != nil {
		a.release(now)
	}
	return wait, why
}

func TestThrottleGrowthAndLockout(t *testing.T) {
	cfg := Throttle{}
	cfg.setDefaults()
	th := newThrottle()
	ip := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	var delays []time.Duration
	for i := 0; i < 6; i++ {
		delays = append(delays, fail(t, th, "aa", ip, &cfg, now))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 16 * time.Second}
	if !reflect.DeepEqual(delays, want) {
		t.Fatalf("delays %v, want %v", delays, want)
	}
	if d, _ := locked(th, "aa", ip, &cfg, now); d != 0 {
		t.Fatal("locked before lockout_after")
	}
	for i := 0; i < 4; i++ {
		fail(t, th, "aa", ip, &cfg, now)
	}
	if d, why := locked(th, "aa", ip, &cfg, now); d == 0 || !strings.Contains(why, "certificate aa") {
		t.Fatalf("not locked after 10 failures: %v %q", d, why)
	}
	// Another certificate from the same address is locked too (per-IP), one elsewhere not.
	if d, _ := locked(th, "bb", ip, &cfg, now); d == 0 {
		t.Fatal("address not locked")
	}
	if d, _ := locked(th, "bb", netip.MustParseAddr("192.0.2.2"), &cfg, now); d != 0 {
		t.Fatal("unrelated certificate and address locked")
	}
	later := now.Add(cfg.LockoutFor + time.Second)
	if d, _ := locked(th, "aa", ip, &cfg, later); d != 0 {
		t.Fatal("lockout did not expire")
	}
	// With a lockout shorter than the window, the failures are still remembered when
	// it ends: one login at a time is let through, and its failure locks again at once.
	short := Throttle{LockoutAfter: 2, LockoutFor: time.Minute, Window: time.Hour}
	short.setDefaults()
	ip3 := netip.MustParseAddr("192.0.2.3")
	fail(t, th, "dd", ip3, &short, now)
	fail(t, th, "dd", ip3, &short, now)
	later = now.Add(2 * time.Minute)
	a, _, _, why := th.reserve("dd", ip3, &short, later)
	if a == nil {
		t.Fatalf("no login after the lockout: %q", why)
	}
	if b, wake, _, _ := th.reserve("dd", ip3, &short, later); b != nil || wake == nil {
		t.Fatal("a second login in parallel after the lockout was not made to wait")
	}
	a.failed(&short, later)
	if d, _ := locked(th, "dd", ip3, &short, later); d == 0 {
		t.Fatal("a failure after the lockout did not lock again")
	}
}

// TestThrottleInFlight: logins in flight count against the lockout budget, per
// certificate and per address; a login over the budget waits until one is decided.
func TestThrottleInFlight(t *testing.T) {
	cfg := Throttle{LockoutAfter: 3}
	cfg.setDefaults()
	th := newThrottle()
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Now()
	var held []*attempt
	for i := 0; i < 3; i++ {
		a, _, _, why := th.reserve("aa", ip, &cfg, now)
		if a == nil {
			t.Fatalf("login %d not admitted: %q", i+1, why)
		}
		held = append(held, a)
	}
	// The certificate's budget is taken (from any address), and the address's (for any
	// certificate).
	for _, tc := range []struct {
		serial string
		ip     netip.Addr
	}{{"aa", ip}, {"aa", other}, {"bb", ip}} {
		a, wake, _, why := th.reserve(tc.serial, tc.ip, &cfg, now)
		if a != nil || wake == nil || why != "" {
			t.Fatalf("%s from %s over the budget: attempt %v, wake %v, %q", tc.serial, tc.ip, a, wake, why)
		}
	}
	if a, _, _, _ := th.reserve("bb", other, &cfg, now); a == nil {
		t.Fatal("an unrelated certificate and address must not wait")
	} else {
		a.release(now)
	}
	_, wake, _, _ := th.reserve("aa", ip, &cfg, now)
	held[0].failed(&cfg, now)
	select {
	case <-wake:
	default:
		t.Fatal("a decided login did not wake the waiting one")
	}
	// One failure and two in flight: still no room.
	if a, _, _, _ := th.reserve("aa", ip, &cfg, now); a != nil {
		t.Fatal("admitted with one failure and two logins in flight")
	}
	held[1].failed(&cfg, now)
	held[2].failed(&cfg, now)
	if d, why := locked(th, "aa", ip, &cfg, now); d == 0 {
		t.Fatalf("three failures did not lock: %q", why)
	}
	held[2].failed(&cfg, now) // decided twice: no effect
	// A success frees the certificate's budget at once, and releases keep nothing.
	th2 := newThrottle()
	a, _, _, _ := th2.reserve("cc", ip, &cfg, now)
	a.succeeded(now)
	b, _, _, _ := th2.reserve("cc", ip, &cfg, now)
	b.release(now)
	for i := range th2.shards {
		if n := len(th2.shards[i].m); n != 0 {
			t.Fatalf("throttle keeps %d entries after a success and a release", n)
		}
	}
}

func TestConnLimiter(t *testing.T) {
	l := newConnLimiter()
	lim := Limits{MaxConnections: 3, MaxConnectionsPerIP: 2, HandshakesPerIPPerMinute: 2}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Now()
	r1, why := l.acquire(a, &lim, now)
	if why != "" {
		t.Fatal(why)
	}
	r2, _ := l.acquire(a, &lim, now)
	if _, why := l.acquire(a, &lim, now); !strings.Contains(why, "per_ip") {
		t.Fatalf("third from one address: %q", why)
	}
	r3, _ := l.acquire(b, &lim, now)
	if _, why := l.acquire(b, &lim, now); !strings.Contains(why, "max_connections (3)") {
		t.Fatalf("fourth overall: %q", why)
	}
	var allowed []bool
	for i := 0; i < 3; i++ {
		allowed = append(allowed, l.handshakeAllowed(a, &lim, now))
	}
	if !reflect.DeepEqual(allowed, []bool{true, true, false}) {
		t.Fatalf("handshake bucket of 2 per minute: %v", allowed)
	}
	if !l.handshakeAllowed(a, &lim, now.Add(time.Minute)) {
		t.Fatal("bucket did not refill")
	}
	r1()
	r2()
	r3()
	if l.total.Load() != 0 {
		t.Fatalf("total %d after release", l.total.Load())
	}
}
