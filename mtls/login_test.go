package mtls_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"

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
