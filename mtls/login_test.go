package mtls_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// recordingBackend is a stub IMAP server that answers every command OK and sends
// each LOGIN line it gets on logins. A stub because Dovecot folds the login name
// itself (auth_username_format %Lu), so it cannot show the name the front sent.
func recordingBackend(t *testing.T, answer string) (addr string, logins <-chan string) {
	ch := make(chan string, 16)
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
				ch <- rest
				io.WriteString(c, tag+" "+answer+"\r\n")
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
	addr, logins := recordingBackend(t, "OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
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
