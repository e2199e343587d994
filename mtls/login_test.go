package mtls_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// recordingBackend is a stub IMAP server that answers every command OK, except LOGIN,
// which gets answer(tag), and sends each LOGIN line it gets on logins. A stub because
// Dovecot cannot be made to give these answers, and folds the login name itself
// (auth_username_format %Lu), so it cannot show the name the front sent.
func recordingBackend(t *testing.T, answer func(tag string) string) (addr string, logins <-chan string) {
	ch := make(chan string, 64)
	ln := serveStub(t, localListen(t), func(c net.Conn) {
		br := bufio.NewReader(c)
		io.WriteString(c, "* OK [CAPABILITY IMAP4rev1] stub ready\r\n")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			tag, rest, _ := strings.Cut(strings.TrimRight(l, "\r\n"), " ")
			if strings.HasPrefix(rest, "LOGIN ") {
				select {
				case ch <- rest:
				default:
				}
				io.WriteString(c, answer(tag)+"\r\n")
				continue
			}
			io.WriteString(c, tag+" OK done\r\n")
		}
	})
	return ln.Addr().String(), ch
}

// TestBackendGetsCertificateAddress: in email mode the backend gets the certificate's
// own spelling of the address, whatever case the client typed the domain in, so the
// backend sees one canonical name per mailbox.
func TestBackendGetsCertificateAddress(t *testing.T) {
	addr, logins := recordingBackend(t, func(tag string) string { return tag + " OK [CAPABILITY IMAP4rev1 IDLE] Logged in" })
	e := newEnv(t, envOptions{backendAddr: addr})
	leaf := e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@Example.org"}})
	for _, typed := range []string{"alice@EXAMPLE.ORG", "alice@example.org"} {
		c := e.dial(t, leaf)
		c.line()
		c.send("a LOGIN " + typed + " secret\r\n")
		if got := c.line(); !loginOK.MatchString(got) {
			t.Fatalf("login as %s: %q", typed, got)
		}
		if got := <-logins; got != `LOGIN "alice@Example.org" "secret"` {
			t.Errorf("client typed %s; the backend got %s, want the certificate's alice@Example.org", typed, got)
		}
	}
}

// TestLockoutPerCertificate: one card holder failing again and again locks out that
// card only; another person behind the same address (a NAT, an office) with the right
// card and password still logs in. The address itself is locked out only once many
// different certificates have failed from it (address_lockout_certificates).
func TestLockoutPerCertificate(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) {
		o.Throttle = mtls.Throttle{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, LockoutAfter: 3, LockoutFor: time.Hour, AddressLockoutCertificates: 3}
	}})
	tryLogin := func(leaf *testenv.Leaf, user, password string) string {
		c := e.dial(t, leaf)
		c.line()
		c.send("a LOGIN " + user + " " + password + "\r\n")
		return c.line()
	}
	for i := 0; i < 5; i++ {
		tryLogin(e.bob, testenv.Bob.Name, "wrong")
	}
	if got := tryLogin(e.bob, testenv.Bob.Name, testenv.Bob.Password); !strings.HasPrefix(got, "a NO [UNAVAILABLE] Too many failed logins") {
		t.Fatalf("bob's card after 5 failures: %q, want locked out", got)
	}
	if got := tryLogin(e.alice, testenv.Alice.Name, testenv.Alice.Password); !loginOK.MatchString(got) {
		t.Fatalf("alice from the same address after bob's lockout: %q, want logged in", got)
	}
	// Two more cards fail: three different certificates lock the address.
	for _, name := range []string{"carol@example.org", "dave@example.org"} {
		leaf := e.pki.Issue(t, testenv.LeafOptions{Emails: []string{name}})
		if got := tryLogin(leaf, name, "wrong"); got != "a NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Fatalf("%s: %q", name, got)
		}
	}
	if got := tryLogin(e.alice, testenv.Alice.Name, testenv.Alice.Password); !strings.HasPrefix(got, "a NO [UNAVAILABLE] Too many failed logins") {
		t.Fatalf("alice after three certificates failed from her address: %q, want the address locked out", got)
	}
	waitForLine(t, e.logs, `"result":"locked"`, "different certificates")
}

// TestBackendRefusalCounted: any answer of the backend other than OK to a LOGIN the
// front sent — a NO with a code such as CONTACTADMIN, a BAD, a BYE (Dovecot's "Input
// buffer full"), a refused literal — is delayed and counted like a wrong password: what
// makes a backend answer so must not be a way to ask it without limit. Only refusals
// that blame the backend itself are not (TestBackendFaultNotCounted).
func TestBackendRefusalCounted(t *testing.T) {
	for _, tc := range []struct {
		name, password string
		answer         func(tag string) string
	}{
		{"no_contactadmin", "secret", func(tag string) string { return tag + " NO [CONTACTADMIN] Ask your administrator." }},
		{"alert_not_transport", "secret", func(tag string) string { return tag + " NO [ALERT] Account suspended." }},
		{"bad", "secret", func(tag string) string { return tag + " BAD Error in IMAP command." }},
		{"bye", "secret", func(string) string { return "* BYE Input buffer full" }},
		{"literal_refused", "pässwort", func(string) string { return "g2 NO no literals here" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := recordingBackend(t, tc.answer)
			e := newEnv(t, envOptions{backendAddr: addr, mod: func(o *mtls.Options) { o.Throttle.LockoutAfter = 2 }})
			for i := 0; i < 2; i++ {
				c := e.dial(t, e.alice)
				c.line()
				c.send(fmt.Sprintf("a LOGIN alice@example.org {%d+}\r\n%s\r\n", len(tc.password), tc.password))
				if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE] The mail server is not available") {
					t.Fatalf("attempt %d: %q", i+1, got)
				}
			}
			waitForLine(t, e.logs, `"result":"backend_refused"`, `"delay":"20ms"`) // the second, delayed
			c := e.dial(t, e.alice)
			c.line()
			c.send("a LOGIN alice@example.org secret\r\n")
			if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE] Too many failed logins") {
				t.Fatalf("after two refused logins: %q, want the certificate locked out", got)
			}
		})
	}
}

// TestBackendFaultNotCounted: a refusal in which the backend blames itself or the way
// the front reaches it (its auth service down, TLS or a client certificate required of
// the front) says nothing about the password; a misconfigured backend must not lock
// every card out, so these are not counted: more attempts than lockout_after still
// reach the backend and none is locked out.
func TestBackendFaultNotCounted(t *testing.T) {
	for _, tc := range []struct{ name, answer string }{
		{"unavailable", "NO [UNAVAILABLE] Temporary authentication failure."},
		{"privacyrequired", "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."},
		{"serverbug", "NO [SERVERBUG] Internal error occurred. Refer to server log for more information."},
		{"alert_certificate", "NO [ALERT] Client didn't present valid SSL certificate"},
		{"uncoded_tls", "NO Plaintext authentication disallowed on non-secure (SSL/TLS) connections."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, logins := recordingBackend(t, func(tag string) string { return tag + " " + tc.answer })
			e := newEnv(t, envOptions{backendAddr: addr, mod: func(o *mtls.Options) { o.Throttle.LockoutAfter = 2 }})
			for i := 0; i < 4; i++ {
				c := e.dial(t, e.alice)
				c.line()
				c.send("a LOGIN alice@example.org secret\r\n")
				if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE] The mail server is not available") {
					t.Fatalf("attempt %d: %q, want the backend reported unavailable (not a lockout)", i+1, got)
				}
			}
			if n := len(logins); n != 4 {
				t.Fatalf("%d of 4 logins reached the backend, want all: none may be refused as a lockout", n)
			}
			waitForLine(t, e.logs, `"result":"backend_error"`, `check the backend's TLS`)
			if strings.Contains(e.logs.String(), `"result":"locked"`) || strings.Contains(e.logs.String(), `"result":"backend_refused"`) {
				t.Fatal("a refusal that blames the backend was counted against the card")
			}
		})
	}
}

// TestPasswordTooLong: a password over 1 KiB is BAD without asking the backend, and
// counts as a failed login.
func TestPasswordTooLong(t *testing.T) {
	relay, tried := countingRelay(t, testenv.StartDovecot(t, testenv.DovecotOptions{}).Addr)
	e := newEnv(t, envOptions{backendAddr: relay, mod: func(o *mtls.Options) { o.Throttle.LockoutAfter = 2 }})
	for i, n := range []int{1025, 1100} {
		c := e.dial(t, e.alice)
		c.line()
		long := strings.Repeat("x", n)
		c.send(fmt.Sprintf("a LOGIN alice@example.org {%d+}\r\n%s\r\n", len(long), long))
		if got := c.line(); got != "a BAD Password too long (at most 1024 bytes)." {
			t.Fatalf("attempt %d: %q", i+1, got)
		}
	}
	c := e.dial(t, e.alice)
	c.line()
	c.send("a LOGIN alice@example.org " + testenv.Alice.Password + "\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE] Too many failed logins") {
		t.Fatalf("right password after two over-long ones: %q, want locked out", got)
	}
	if n := tried.Load(); n != 0 {
		t.Errorf("%d over-long passwords reached the backend", n)
	}
	waitForLine(t, e.logs, `"result":"password_too_long"`, `"reason":"password of 1100 bytes"`)
}

// TestLoginsPerConnection: one connection gets limits.max_logins_per_connection
// attempts; the next one is answered BYE and the connection closes.
func TestLoginsPerConnection(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) {
		o.MaxLoginsPerConnection = 3
		o.Throttle.LockoutAfter = 1000
	}})
	c := e.dial(t, e.alice)
	c.line()
	for i := 0; i < 3; i++ {
		c.send(fmt.Sprintf("a%d LOGIN alice@example.org wrong%d\r\n", i, i))
		if got := c.line(); got != fmt.Sprintf("a%d NO [AUTHENTICATIONFAILED] Authentication failed.", i) {
			t.Fatalf("attempt %d: %q", i+1, got)
		}
	}
	c.send("b LOGIN alice@example.org " + testenv.Alice.Password + "\r\n")
	lines := c.closed()
	if len(lines) != 1 || lines[0] != "* BYE Too many login attempts on this connection. Check your password and reconnect." {
		t.Fatalf("fourth login on one connection: %q", lines)
	}
}

// TestOneMistakeOneFailure: Thunderbird retries a failed AUTHENTICATE PLAIN at once
// with LOGIN and the same password. On one connection the same failed credentials are
// answered as before without asking the backend, and count once: two tries of one
// wrong password leave room for the right one under lockout_after 2. Another wrong
// password still counts.
func TestOneMistakeOneFailure(t *testing.T) {
	relay, tried := countingRelay(t, testenv.StartDovecot(t, testenv.DovecotOptions{}).Addr)
	e := newEnv(t, envOptions{backendAddr: relay, mod: func(o *mtls.Options) { o.Throttle.LockoutAfter = 2 }})
	c := e.dial(t, e.alice)
	c.line()
	c.send("a AUTHENTICATE PLAIN " + plain("", testenv.Alice.Name, "wrong") + "\r\n")
	if got := c.line(); got != "a NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Fatalf("AUTHENTICATE: %q", got)
	}
	c.send("b LOGIN " + testenv.Alice.Name + " wrong\r\n")
	if got := c.line(); got != "b NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Fatalf("LOGIN with the same password: %q", got)
	}
	if n := tried.Load(); n != 1 {
		t.Fatalf("the same wrong password reached the backend %d times, want once", n)
	}
	waitForLine(t, e.logs, `"result":"repeated"`, `"method":"LOGIN"`)
	c.send("c LOGIN " + testenv.Alice.Name + " " + testenv.Alice.Password + "\r\n")
	if got := c.line(); !loginOK.MatchString(got) {
		t.Fatalf("the right password after one mistake tried twice: %q", got)
	}

	// The repeat is per connection, and a different wrong password counts.
	d := e.dial(t, e.bob)
	d.line()
	for i, pw := range []string{"wrong1", "wrong1", "wrong2"} {
		d.send(fmt.Sprintf("d%d LOGIN %s %s\r\n", i, testenv.Bob.Name, pw))
		if got := d.line(); got != fmt.Sprintf("d%d NO [AUTHENTICATIONFAILED] Authentication failed.", i) {
			t.Fatalf("bob %d: %q", i, got)
		}
	}
	d.send("d9 LOGIN " + testenv.Bob.Name + " " + testenv.Bob.Password + "\r\n")
	if got := d.line(); !strings.HasPrefix(got, "d9 NO [UNAVAILABLE] Too many failed logins") {
		t.Fatalf("bob after two different wrong passwords: %q, want locked out", got)
	}
}
