package mtls_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestTranscripts replays every testdata/*.txt against a front with Alice's certificate.
// good_* must end logged in (a NOOP then reaches Dovecot); fail_* must never log in.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) { o.Throttle.LockoutAfter = 1000 }})
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			good := strings.HasPrefix(name, "good_")
			if !good && !strings.HasPrefix(name, "fail_") {
				t.Fatalf("transcript name must start with good_ or fail_")
			}
			c := e.dial(t, e.alice)
			loggedIn := replay(t, c, string(data))
			if good {
				if !loggedIn {
					t.Fatalf("good transcript did not log in")
				}
				c.send("zz NOOP\r\n")
				if got := c.until("zz "); !strings.HasPrefix(got, "zz OK") {
					t.Fatalf("NOOP after login: %q", got)
				}
			} else if loggedIn {
				t.Fatalf("fail transcript logged in")
			}
		})
	}
}

var loginOK = regexp.MustCompile(`^\S+ OK \[CAPABILITY .*\] Logged in`)

// replay runs a transcript: "C: line" is sent, "S: line" must be the next line exactly,
// "S~ re" the next line must match re, "S* re" lines are skipped until one matches.
func replay(t *testing.T, c *lineConn, script string) (loggedIn bool) {
	t.Helper()
	for n, l := range strings.Split(script, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if len(l) < 3 {
			t.Fatalf("line %d: bad transcript line %q", n+1, l)
		}
		kind, text := l[:3], l[3:]
		switch kind {
		case "C: ":
			c.send(text + "\r\n")
		case "S: ":
			got := c.line()
			if got != text {
				t.Fatalf("line %d: got %q, want %q", n+1, got, text)
			}
			loggedIn = loggedIn || loginOK.MatchString(got)
		case "S~ ":
			got := c.line()
			if !regexp.MustCompile(text).MatchString(got) {
				t.Fatalf("line %d: got %q, want match for %q", n+1, got, text)
			}
			loggedIn = loggedIn || loginOK.MatchString(got)
		case "S* ":
			re := regexp.MustCompile(text)
			for {
				got := c.line()
				loggedIn = loggedIn || loginOK.MatchString(got)
				if re.MatchString(got) {
					break
				}
			}
		default:
			t.Fatalf("line %d: bad transcript line %q", n+1, l)
		}
	}
	return loggedIn
}

// TestGoodPath drives a real IMAP client through the front into Dovecot.
func TestGoodPath(t *testing.T) {
	e := newEnv(t, envOptions{})
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, e.clientTLS(e.alice))
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan uint32, 16)
	c := imapclient.New(conn, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				updates <- *d.NumMessages
			}
		},
	}})
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	if err := c.Login(testenv.Alice.Name, testenv.Alice.Password).Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	if !c.Caps().Has(imap.CapIdle) {
		t.Errorf("post-login capabilities from Dovecot missing IDLE: %v", c.Caps())
	}
	boxes, err := c.List("", "*", nil).Collect()
	if err != nil || len(boxes) == 0 {
		t.Fatalf("list: %v %v", boxes, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	if sel.NumMessages != 3 {
		t.Errorf("INBOX has %d messages, want 3", sel.NumMessages)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v %v", msgs, err)
	}
	var body []byte
	for _, b := range msgs[0].BodySection {
		body = b.Bytes
	}
	if string(body) != testenv.Message(testenv.Alice.Name, 2) {
		t.Errorf("fetched body %q", body)
	}

	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("idle: %v", err)
	}
	// Another session appends a message; the idling one hears of it through the front.
	other := imapclient.New(mustDial(t, e, e.alice), nil)
	defer other.Close()
	if err := other.Login(testenv.Alice.Name, testenv.Alice.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: appended\r\n\r\nhi\r\n"
	app := other.Append("INBOX", int64(len(msg)), nil)
	io.WriteString(app, msg)
	app.Close()
	if _, err := app.Wait(); err != nil {
		t.Fatalf("append: %v", err)
	}
	select {
	case n := <-updates:
		if n != 4 {
			t.Errorf("IDLE update: %d messages, want 4", n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no IDLE update within 60s")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	for _, want := range []string{`"result":"ok"`, `"user":"alice@example.org"`, `"msg":"login ok"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(logs, testenv.Alice.Password) {
		t.Errorf("log contains the password")
	}
	waitDovecotLog(t, e, "rip=127.0.0.1")
}

// waitDovecotLog waits for s in Dovecot's log (its log process writes asynchronously).
func waitDovecotLog(t *testing.T, e *env, s string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(e.dovecot.Log(), s) {
			return
		}
	}
	t.Errorf("Dovecot's log never said %q:\n%s", s, e.dovecot.Log())
}

func mustDial(t *testing.T, e *env, leaf *testenv.Leaf) net.Conn {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, e.clientTLS(leaf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestCertificateRefused: every bad certificate gets "* BYE [ALERT] …" (or UNAVAILABLE
// for an unusable CRL) over TLS and the connection closes; the log says why.
func TestCertificateRefused(t *testing.T) {
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	e := newEnv(t, envOptions{dovecot: dc})
	other := testenv.NewPKI(t)
	now := time.Now()
	revoked := e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"carol@example.org"}})
	e.pki.Revoke(revoked.Cert.SerialNumber)
	e.publishCRL(t, testenv.CRLOptions{})

	cases := []struct {
		name   string
		leaf   *testenv.Leaf
		result string
		bye    string
	}{
		{"no_cert", nil, "no_cert", "* BYE [ALERT] No client certificate"},
		{"self_signed", testenv.SelfSigned(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}}), "untrusted", "* BYE [ALERT] This certificate was not issued"},
		{"other_ca", other.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}}), "untrusted", "* BYE [ALERT] This certificate was not issued"},
		{"expired", e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}), "expired", "* BYE [ALERT] Your certificate expired on"},
		{"not_yet_valid", e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)}), "not_yet_valid", "* BYE [ALERT] Your certificate is not valid yet"},
		{"server_auth_only", e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), "wrong_usage", "* BYE [ALERT] This certificate is not for e-mail login"},
		{"revoked", revoked, "revoked", "* BYE [ALERT] Your certificate has been revoked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, tc.leaf)
			lines := c.closed()
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.bye) {
				t.Fatalf("got %q, want one line starting %q", lines, tc.bye)
			}
			if !strings.Contains(e.logs.String(), `"result":"`+tc.result+`"`) {
				t.Errorf("no log line with result %s", tc.result)
			}
		})
	}

	t.Run("no_crl_for_issuer", func(t *testing.T) {
		inter, key := e.pki.NewIntermediate(t, "second intermediate without a CRL")
		c := e.dial(t, e.pki.IssueBy(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}}, inter, key))
		lines := c.closed()
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "* BYE [UNAVAILABLE] Certificate status cannot be checked") {
			t.Fatalf("got %q", lines)
		}
		waitFor(t, e.logs, "no CRL configured for issuer")
	})

	t.Run("stale_crl", func(t *testing.T) {
		s := newEnv(t, envOptions{dovecot: dc})
		s.publishCRL(t, testenv.CRLOptions{ThisUpdate: now.Add(-3 * time.Hour), NextUpdate: now.Add(-2 * time.Hour)})
		c := s.dial(t, s.alice)
		lines := c.closed()
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "* BYE [UNAVAILABLE] Certificate status cannot be checked") {
			t.Fatalf("got %q", lines)
		}
		if !strings.Contains(s.logs.String(), `"result":"crl_unavailable"`) {
			t.Errorf("no crl_unavailable log line")
		}
	})

	t.Run("rsa_2048_good", func(t *testing.T) {
		leaf := e.pki.Issue(t, testenv.LeafOptions{Emails: []string{"alice@example.org"}, Key: testenv.KeyRSA2048})
		c := e.dial(t, leaf)
		if got := c.line(); !strings.HasPrefix(got, "* OK [CAPABILITY") {
			t.Fatalf("greeting: %q", got)
		}
	})
}

// TestOldTLSRefused: TLS 1.0 and 1.1 fail the handshake; 1.2 and 1.3 work.
func TestOldTLSRefused(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"})
	for _, tc := range []struct {
		name string
		max  uint16
		ok   bool
	}{
		{"tls10", tls.VersionTLS10, false},
		{"tls11", tls.VersionTLS11, false},
		{"tls12", tls.VersionTLS12, true},
		{"tls13", tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.clientTLS(e.alice)
			cfg.MinVersion = tls.VersionTLS10
			cfg.MaxVersion = tc.max
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, cfg)
			if !tc.ok {
				if err == nil {
					conn.Close()
					t.Fatalf("handshake with max %x succeeded", tc.max)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := newLineConn(t, conn)
			if got := c.line(); !strings.HasPrefix(got, "* OK") {
				t.Fatalf("greeting %q", got)
			}
		})
	}
}

// TestRevokedWhileOpen: a CRL listing a live session's certificate ends it with BYE
// within a poll interval (generously bounded).
func TestRevokedWhileOpen(t *testing.T) {
	e := newEnv(t, envOptions{crlInterval: 200 * time.Millisecond})
	c := e.dial(t, e.alice)
	c.line()
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	if got := c.until("a "); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("login: %q", got)
	}
	c.send("b SELECT INBOX\r\n")
	c.until("b OK")
	c.send("c IDLE\r\n")
	c.until("+ ")
	// Bob stays; only Alice's certificate is revoked.
	b := e.dial(t, e.bob)
	b.line()
	b.send("a LOGIN bob@example.org bob-secret\r\n")
	b.until("a OK")

	e.pki.Revoke(e.alice.Cert.SerialNumber)
	testenv.WriteFile(t, e.crlFile, e.pki.CRL(t, testenv.CRLOptions{}))
	lines := c.closed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE [ALERT] Your certificate has been revoked") {
		t.Fatalf("alice's session ended with %q", lines)
	}
	b.send("n NOOP\r\n")
	if got := b.until("n "); !strings.HasPrefix(got, "n OK") {
		t.Fatalf("bob's session: %q", got)
	}
	// And a new connection with the revoked certificate is refused.
	c2 := e.dial(t, e.alice)
	if got := c2.closed(); len(got) != 1 || !strings.Contains(got[0], "revoked") {
		t.Fatalf("new connection after revocation: %q", got)
	}
}

// TestStaleCRLEndsSessions: when the CRL of a CA goes stale (no new one past its
// nextUpdate plus grace), the live sessions of that CA's certificates end with
// "* BYE [UNAVAILABLE]" within a poll, as new handshakes are refused; a session of
// another CA, whose CRL is fresh, goes on.
func TestStaleCRLEndsSessions(t *testing.T) {
	other := testenv.NewPKI(t)
	bob := other.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Bob.Name}})
	e := newEnv(t, envOptions{crlInterval: 100 * time.Millisecond, crlGrace: time.Millisecond, mod: func(o *mtls.Options) {
		path := filepath.Join(t.TempDir(), "other.crl")
		testenv.WriteFile(t, path, other.CRL(t, testenv.CRLOptions{}))
		store, err := crl.NewStore(crl.Options{File: path, Issuer: other.Intermediate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		o.CRLs = append(o.CRLs, store)
		o.ClientRoots = o.ClientRoots.Clone()
		o.ClientRoots.AddCert(other.Root)
	}})
	c := e.dial(t, e.alice)
	c.line()
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	c.until("a OK")
	c.send("b SELECT INBOX\r\n")
	c.until("b OK")
	c.send("c IDLE\r\n")
	c.until("+ ")
	b := e.dial(t, bob)
	b.line()
	b.send("a LOGIN bob@example.org bob-secret\r\n")
	if got := b.until("a "); !loginOK.MatchString(got) {
		t.Fatalf("bob's login: %q", got)
	}
	// Both sessions are open: now the CA's CRL goes stale. The poller loads a newer,
	// validly signed CRL whose nextUpdate has already passed (a stalled mirror), so the
	// test does not race the clock however slow the machine is.
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	testenv.WriteFile(t, e.crlFile, e.pki.CRL(t, testenv.CRLOptions{ThisUpdate: past.Add(-time.Hour), NextUpdate: past}))

	lines := c.closed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE [UNAVAILABLE] Certificate status cannot be checked") {
		t.Fatalf("alice's session ended with %q", lines)
	}
	b.send("n NOOP\r\n")
	if got := b.until("n "); !strings.HasPrefix(got, "n OK") {
		t.Fatalf("the session of the other CA: %q", got)
	}
	waitFor(t, e.logs, "session ended: the CRL of its CA is stale")
	if got := counter(t, e.front.Metrics(), "imapgate_front_sessions_crl_unavailable_total"); got != 1 {
		t.Errorf("imapgate_front_sessions_crl_unavailable_total = %v, want 1", got)
	}
	if got := counter(t, e.front.Metrics(), "imapgate_front_crls_stale"); got != 1 {
		t.Errorf("imapgate_front_crls_stale = %v, want 1", got)
	}
}

// counter reads the value of an unlabelled counter or gauge.
func counter(t *testing.T, m *mtls.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		if c := f.GetMetric()[0].GetCounter(); c != nil {
			return c.GetValue()
		}
		return f.GetMetric()[0].GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestHostileInput: oversized data, garbage, floods and stalls end in BAD or BYE, never
// a hang.
func TestHostileInput(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
		// Long enough for a handshake on a loaded machine, short enough to wait for.
		o.HandshakeTimeout = 5 * time.Second
		o.PreAuthTimeout = 5 * time.Second
	}})
	t.Run("long_line", func(t *testing.T) {
		c := e.dial(t, e.alice)
		c.line()
		go io.WriteString(c.c, "a LOGIN "+strings.Repeat("x", 20000)+"\r\n")
		lines := c.closed()
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "* BYE [TOOBIG]") {
			t.Fatalf("got %q", lines)
		}
	})
	t.Run("garbage_bytes", func(t *testing.T) {
		c := e.dial(t, e.alice)
		c.line()
		g := make([]byte, 4096)
		for i := range g {
			g[i] = byte(i*7 + 3)
		}
		c.c.Write(g)
		lines := c.closed()
		if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE") {
			t.Fatalf("got %q", lines)
		}
	})
	t.Run("command_flood", func(t *testing.T) {
		c := e.dial(t, e.alice)
		c.line()
		go func() {
			for i := 0; i < 10000; i++ {
				if _, err := io.WriteString(c.c, "x BOGUS\r\n"); err != nil {
					return
				}
			}
		}()
		lines := c.closed()
		if len(lines) != 6 || lines[5] != "* BYE Too many invalid commands." {
			t.Fatalf("got %d lines, last %q", len(lines), lines[len(lines)-1])
		}
	})
	t.Run("handshake_never_finished", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte{0x16, 0x03, 0x01}) // the start of a ClientHello, then nothing
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = io.ReadAll(conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("front did not close a stalled handshake")
		}
		waitFor(t, e.logs, `"result":"timeout"`)
	})
	t.Run("idle_before_login", func(t *testing.T) {
		c := e.dial(t, e.alice)
		c.line()
		lines := c.closed()
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "* BYE Autologout") {
			t.Fatalf("got %q", lines)
		}
	})
	t.Run("literal_never_sent", func(t *testing.T) {
		c := e.dial(t, e.alice)
		c.line()
		c.send("a LOGIN {10}\r\n")
		if got := c.line(); got != "+ Ready for literal data" {
			t.Fatalf("got %q", got)
		}
		c.closed() // the pre-auth timeout ends it
	})
}

// TestLiteralAfterBadCommand: a command that fails to parse before its
// non-synchronising literal has the literal dropped with it. Its bytes (here a password
// that looks like a command) are neither answered as a command nor logged.
func TestLiteralAfterBadCommand(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(t, e.alice)
	c.line()
	literal := "hunter2 CAPABILITY\r\n"
	c.send(fmt.Sprintf("a LOGIN \"alice@example.org\"x {%d+}\r\n%s\r\nb NOOP\r\n", len(literal), literal))
	if got := c.line(); !strings.HasPrefix(got, "a BAD ") {
		t.Fatalf("bad command: %q", got)
	}
	if got := c.line(); got != "b OK NOOP completed." {
		t.Fatalf("after the bad command: %q (the literal was read as a command)", got)
	}
	c.send("c LOGIN alice@example.org alice-secret\r\n")
	if got := c.line(); !loginOK.MatchString(got) {
		t.Fatalf("login: %q", got)
	}
	waitFor(t, e.logs, `"msg":"login ok"`)
	if strings.Contains(e.logs.String(), "hunter2") {
		t.Fatal("the literal's bytes reached the log")
	}
}

// TestBackendTrouble: a backend that refuses, hangs or talks nonsense yields a clean
// NO [UNAVAILABLE], not a hang.
func TestBackendTrouble(t *testing.T) {
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, then say nothing
		}
	}()
	junk, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	go func() {
		for {
			c, err := junk.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "* BYE go away\r\n")
			c.Close()
		}
	}()
	down := freeAddr(t)
	for _, tc := range []struct{ name, addr string }{
		{"down", down},
		{"hanging", hang.Addr().String()},
		{"bye", junk.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{backendAddr: tc.addr, mod: func(o *mtls.Options) {
				o.Backend.DialTimeout = time.Second
				o.Backend.LoginTimeout = time.Second
			}})
			c := e.dial(t, e.alice)
			c.line()
			c.send("a LOGIN alice@example.org alice-secret\r\n")
			if got := c.line(); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
				t.Fatalf("got %q", got)
			}
			c.send("b LOGOUT\r\n")
			c.closed()
		})
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestThrottle: failures slow down, then lock the certificate out for a while; the
// lockout does not even ask the backend.
func TestThrottle(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) {
		o.Throttle = mtls.Throttle{BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond, LockoutAfter: 3, LockoutFor: time.Hour}
	}})
	c := e.dial(t, e.alice)
	c.line()
	for i := 0; i < 3; i++ {
		// Three different wrong passwords: one repeated would count once.
		c.send(fmt.Sprintf("a LOGIN alice@example.org wrong%d\r\n", i))
		if got := c.line(); got != "a NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Fatalf("attempt %d: %q", i, got)
		}
	}
	c.send("b LOGIN alice@example.org alice-secret\r\n")
	if got := c.line(); !strings.HasPrefix(got, "b NO [UNAVAILABLE] Too many failed logins") {
		t.Fatalf("after lockout: %q", got)
	}
	if !strings.Contains(e.logs.String(), `"result":"locked"`) {
		t.Error("no locked log line")
	}
}

// TestThrottleParallel: wrong passwords of one certificate sent at once on many
// connections reach the backend no more often than its lockout allows, while as many
// right ones at once all log in (they wait for each other, not fail). Different
// certificates from one address each get their own tries (none waits for another).
// A relay in front of Dovecot counts the backend logins (one connection each).
func TestThrottleParallel(t *testing.T) {
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	const lockout, n = 3, 20
	for _, tc := range []struct {
		name      string
		certs     int // distinct certificates (all for alice)
		n         int
		password  string
		maxTried  int32
		wantLogin bool
	}{
		{"one_certificate", 1, n, "wrong", lockout, false},
		{"one_address", n, n, "wrong", n, false},
		{"right_passwords", 1, 8, testenv.Alice.Password, 8, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay, tried := countingRelay(t, dc.Addr)
			e := newEnv(t, envOptions{dovecot: dc, backendAddr: relay, mod: func(o *mtls.Options) {
				o.Throttle = mtls.Throttle{BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond, LockoutAfter: lockout, LockoutFor: time.Hour}
			}})
			leaves := []*testenv.Leaf{e.alice}
			for len(leaves) < tc.certs {
				leaves = append(leaves, e.pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}}))
			}
			conns := make([]*lineConn, tc.n)
			for i := range conns {
				conns[i] = e.dial(t, leaves[i%len(leaves)])
				conns[i].line()
			}
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
					io.WriteString(c.c, "a LOGIN alice@example.org "+tc.password+"\r\n")
				}()
			}
			wg.Wait()
			for i, c := range conns {
				got := c.line()
				switch {
				case tc.wantLogin && !loginOK.MatchString(got):
					t.Errorf("connection %d: %q, want a login", i, got)
				case !tc.wantLogin && got != "a NO [AUTHENTICATIONFAILED] Authentication failed." && !strings.HasPrefix(got, "a NO [UNAVAILABLE] Too many failed logins"):
					t.Errorf("connection %d: %q", i, got)
				}
			}
			if got := tried.Load(); got > tc.maxTried || (tc.wantLogin && got != tc.maxTried) {
				t.Errorf("%d logins reached the backend, want at most %d (lockout_after %d)", got, tc.maxTried, lockout)
			}
		})
	}
}

// countingRelay forwards TCP connections to target and counts them: the front makes one
// backend connection per login it lets through to the password check.
func countingRelay(t *testing.T, target string) (string, *atomic.Int32) {
	var n atomic.Int32
	ln := serveStub(t, localListen(t), func(c net.Conn) {
		n.Add(1)
		b, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			return
		}
		defer b.Close()
		go io.Copy(b, c)
		io.Copy(c, b)
	})
	return ln.Addr().String(), &n
}

// TestStartTLS: the plain port insists on STARTTLS, then behaves like the TLS port.
func TestStartTLS(t *testing.T) {
	e := newEnv(t, envOptions{mode: mtls.StartTLS})
	conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := newLineConn(t, conn)
	if got := c.line(); !strings.Contains(got, "STARTTLS LOGINDISABLED") {
		t.Fatalf("greeting %q", got)
	}
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a NO [PRIVACYREQUIRED]") {
		t.Fatalf("plain LOGIN: %q", got)
	}
	c.send("b STARTTLS\r\n")
	if got := c.line(); got != "b OK Begin TLS negotiation now." {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(conn, e.clientTLS(e.alice))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &lineConn{t: t, c: tc, br: bufio.NewReader(tc)}
	c.send("c CAPABILITY\r\n")
	if got := c.line(); got != "* CAPABILITY IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN" {
		t.Fatalf("capability after STARTTLS: %q", got)
	}
	c.line()
	c.send("d LOGIN alice@example.org alice-secret\r\n")
	if got := c.line(); !loginOK.MatchString(got) {
		t.Fatalf("login after STARTTLS: %q", got)
	}
}

// TestStartTLSForgetsPlaintext: what came before STARTTLS, in the clear and so from
// anyone on the path, does not carry into the TLS session: neither the ID name that the
// login log line records nor the count of bad commands.
func TestStartTLSForgetsPlaintext(t *testing.T) {
	e := newEnv(t, envOptions{mode: mtls.StartTLS})
	startTLS := func(t *testing.T, before ...string) *lineConn {
		conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := newLineConn(t, conn)
		c.line()
		for i, cmd := range before {
			tag := fmt.Sprintf("p%d", i)
			c.send(tag + " " + cmd + "\r\n")
			c.until(tag + " ")
		}
		c.send("s STARTTLS\r\n")
		if got := c.line(); got != "s OK Begin TLS negotiation now." {
			t.Fatalf("STARTTLS: %q", got)
		}
		tc := tls.Client(conn, e.clientTLS(e.alice))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return &lineConn{t: t, c: tc, br: bufio.NewReader(tc)}
	}
	t.Run("id", func(t *testing.T) {
		c := startTLS(t, `ID ("name" "INJECTED-BY-PATH" "version" "1")`)
		c.send("a LOGIN alice@example.org alice-secret\r\n")
		if got := c.line(); !loginOK.MatchString(got) {
			t.Fatalf("login: %q", got)
		}
		waitFor(t, e.logs, `"msg":"login ok"`)
		if strings.Contains(e.logs.String(), "INJECTED-BY-PATH") {
			t.Fatal("the ID sent before STARTTLS reached the TLS session's log")
		}
	})
	t.Run("bad_commands", func(t *testing.T) {
		// The default max_bad_commands is 5: four in the clear, four more over TLS.
		c := startTLS(t, "BOGUS", "BOGUS", "BOGUS", "BOGUS")
		for i := 0; i < 4; i++ {
			c.send("b BOGUS\r\n")
			if got := c.line(); !strings.HasPrefix(got, "b BAD") {
				t.Fatalf("bad command %d over TLS: %q", i+1, got)
			}
		}
		c.send("a LOGIN alice@example.org alice-secret\r\n")
		if got := c.line(); !loginOK.MatchString(got) {
			t.Fatalf("login: %q", got)
		}
	})
}

// TestSessionResumption: a resumed TLS session is checked against the CRL again.
func TestSessionResumption(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"})
	cfg := e.clientTLS(e.alice)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	dial := func() (*lineConn, bool) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := newLineConn(t, conn)
		return c, conn.ConnectionState().DidResume
	}
	c, _ := dial()
	c.line() // the greeting; with TLS 1.3 the ticket arrives with it
	c.send("a LOGOUT\r\n")
	c.closed()
	c, resumed := dial()
	if !resumed {
		t.Fatal("second connection did not resume")
	}
	if got := c.line(); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("resumed greeting %q", got)
	}
	c.send("a LOGOUT\r\n")
	c.closed()
	e.pki.Revoke(e.alice.Cert.SerialNumber)
	e.publishCRL(t, testenv.CRLOptions{})
	c, resumed = dial()
	if !resumed {
		t.Fatal("the connection after the revocation did not resume: the test would check a full handshake")
	}
	if got := c.closed(); len(got) != 1 || !strings.Contains(got[0], "revoked") {
		t.Fatalf("resumed connection after revocation: %q", got)
	}
}

// TestReload swaps in a new client CA: certificates of the old one stop working.
func TestReload(t *testing.T) {
	var opts mtls.Options
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) { opts = *o }})
	other := testenv.NewPKI(t)
	opts.ClientRoots = other.Pool()
	if err := e.front.Reload(opts); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t, e.alice)
	if got := c.closed(); len(got) != 1 || !strings.Contains(got[0], "not issued") {
		t.Fatalf("after reload: %q", got)
	}
	bad := opts
	bad.Backend.Address = ""
	if err := e.front.Reload(bad); err == nil {
		t.Fatal("reload with no backend accepted")
	}
}

// TestReloadBeforeHandshakeEnds: a reload that replaces the CRL sources applies to
// handshakes already under way — one whose client is choosing its certificate when the
// reload lands, and a STARTTLS connection opened before it — not only to connections
// accepted after it. The new source lists Alice's certificate as revoked, or there is
// no source for her CA any more, or her CA is no longer trusted.
func TestReloadBeforeHandshakeEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   mtls.Mode
		source string // "revoking": a new CRL source that lists alice; "none": no source for her CA
		bye    string
	}{
		{"during_handshake_revoked", mtls.ImplicitTLS, "revoking", "* BYE [ALERT] Your certificate has been revoked"},
		{"during_handshake_no_source", mtls.ImplicitTLS, "none", "* BYE [UNAVAILABLE] Certificate status cannot be checked"},
		{"before_starttls_revoked", mtls.StartTLS, "revoking", "* BYE [ALERT] Your certificate has been revoked"},
		{"before_starttls_no_source", mtls.StartTLS, "none", "* BYE [UNAVAILABLE] Certificate status cannot be checked"},
		// Not only the CRL sources: the whole configuration of now, here the client CA.
		{"before_starttls_new_client_ca", mtls.StartTLS, "roots", "* BYE [ALERT] This certificate was not issued"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts mtls.Options
			e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mode: tc.mode, mod: func(o *mtls.Options) { opts = *o }})
			// The new source; the running one (not polled here) keeps its old CRL.
			pki, issuer := e.pki, e.pki.Intermediate
			switch tc.source {
			case "none":
				pki = testenv.NewPKI(t)
				issuer = pki.Intermediate
			case "roots":
				opts.ClientRoots = testenv.NewPKI(t).Pool()
			}
			if tc.source != "roots" {
				pki.Revoke(e.alice.Cert.SerialNumber)
			}
			path := filepath.Join(t.TempDir(), "new.crl")
			testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
			store, err := crl.NewStore(crl.Options{File: path, Issuer: issuer})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			opts.CRLs = []*crl.Store{store}
			reload := func() {
				if err := e.front.Reload(opts); err != nil {
					t.Error(err)
				}
			}

			cfg := e.clientTLS(e.alice)
			conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tc.mode == mtls.StartTLS {
				c := newLineConn(t, conn)
				c.line()
				reload()
				c.send("s STARTTLS\r\n")
				if got := c.line(); got != "s OK Begin TLS negotiation now." {
					t.Fatalf("STARTTLS: %q", got)
				}
			} else {
				// The front has taken the ClientHello and asked for a certificate.
				get := cfg.GetClientCertificate
				cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
					reload()
					return get(cri)
				}
			}
			tc2 := tls.Client(conn, cfg)
			if err := tc2.Handshake(); err != nil {
				t.Fatal(err)
			}
			lines := newLineConn(t, tc2).closed()
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.bye) {
				t.Fatalf("got %q, want one line starting %q", lines, tc.bye)
			}
		})
	}
}

// TestShutdownDrains: Shutdown stops accepting, lets sessions run for the drain time,
// then ends them with BYE.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) { o.DrainTimeout = 500 * time.Millisecond }})
	c := e.dial(t, e.alice)
	c.line()
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	c.until("a OK")
	done := make(chan struct{})
	go func() { e.front.Shutdown(context.Background()); close(done) }()
	lines := c.closed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE [UNAVAILABLE] This server is shutting down") {
		t.Fatalf("got %q", lines)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if conn, err := net.DialTimeout("tcp", e.addr, 5*time.Second); err == nil {
		conn.Close()
		t.Fatal("still accepting after Shutdown")
	}
}

// TestCloseEndsLateSessions: a connection accepted before Close but registered after
// it (here: from a trusted load balancer, whose PROXY header comes late) is ended too,
// instead of starting a session that Close would wait for as long as it lives.
func TestCloseEndsLateSessions(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})
	conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The front accepts at once and then waits for the header; give it time to.
	time.Sleep(300 * time.Millisecond)
	closed := make(chan struct{})
	go func() { e.front.Close(); close(closed) }()
	// Close has begun once the listener is gone.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", e.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener is still open after Close began")
		}
	}
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr:      &net.TCPAddr{IP: net.ParseIP("198.51.100.23"), Port: 40000},
		DestinationAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 993}}
	if _, err := h.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, e.clientTLS(e.alice))
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err == nil {
		if line, err := bufio.NewReader(tc).ReadString('\n'); err == nil {
			t.Errorf("a session started after Close began: %q", line)
		}
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for a connection accepted before it")
	}
	if !strings.Contains(e.logs.String(), `"result":"shutdown"`) {
		t.Error("no log line for the connection ended by Close")
	}
}

// TestSharedTicketKeys: two fronts with the same ticket key file resume each other's
// sessions.
func TestSharedTicketKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tickets.key")
	testenv.WriteFile(t, path, []byte("# rotated daily\n"+ticketKeyLine()+ticketKeyLine()))
	keys, err := mtls.ReadTicketKeys(path)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %d: %v", len(keys), err)
	}
	a := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) { o.SessionTicketKeys = keys }})
	// The second front trusts the same PKI: same server certificate and CRL.
	var opts mtls.Options
	newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) { opts = *o }})
	opts.Certificates = []tls.Certificate{a.server.TLSCertificate()}
	opts.ClientRoots = a.pki.Pool()
	opts.CRLs = []*crl.Store{a.store}
	opts.SessionTicketKeys = keys
	b, err := mtls.New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go b.Serve(ctx, ln, mtls.ImplicitTLS)
	t.Cleanup(func() { cancel(); b.Close() })

	cfg := a.clientTLS(a.alice)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	conn, err := tls.Dial("tcp", a.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	newLineConn(t, conn).line()
	conn.Close()
	conn, err = tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := newLineConn(t, conn).line(); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("greeting from the second front: %q", got)
	}
	if !conn.ConnectionState().DidResume {
		t.Fatal("the second front did not resume the first one's session")
	}
}

// TestPerIPLimits: connections beyond max_connections_per_ip and handshakes beyond the
// per-minute budget are dropped without a greeting; the log says why.
func TestPerIPLimits(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
		o.Limits = mtls.Limits{MaxConnectionsPerIP: 2, HandshakesPerIPPerMinute: 3}
	}})
	a, b := e.dial(t, e.alice), e.dial(t, e.alice)
	a.line()
	b.line()
	if _, err := tls.Dial("tcp", e.addr, e.clientTLS(e.alice)); err == nil {
		t.Fatal("third concurrent connection from one address got through")
	}
	waitFor(t, e.logs, "max_connections_per_ip (2)")
	a.send("x LOGOUT\r\n")
	a.closed()
	a.c.Close()
	// Two handshakes used; one left in this minute, then none. The front releases a's
	// slot a moment after it closed, so retry the dial (refusals cost no handshake).
	var c *lineConn
	for deadline := time.Now().Add(20 * time.Second); c == nil; {
		conn, err := tls.Dial("tcp", e.addr, e.clientTLS(e.alice))
		if err == nil {
			c = newLineConn(t, conn)
			if _, err = c.readLine(); err == nil {
				break
			}
			c = nil
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection after a's slot was released: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.send("x LOGOUT\r\n")
	c.closed()
	c.c.Close()
	// The next one may first meet c's slot not yet released; then the handshake budget.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(e.logs.String(), "too many handshakes"); {
		if conn, err := tls.Dial("tcp", e.addr, e.clientTLS(e.alice)); err == nil {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, rerr := conn.Read(make([]byte, 1)); rerr == nil {
				t.Fatal("handshake over the per-minute budget was served")
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, e.logs, "too many handshakes from this address")
}

// TestBackendQuoting: passwords with quotes, backslashes and UTF-8 reach Dovecot intact
// (quoted with escapes, or as a literal).
func TestBackendQuoting(t *testing.T) {
	users := []testenv.DovecotUser{
		{Name: "carol@example.org", Password: `sp ace"quote\back`},
		{Name: "dave@example.org", Password: "pässwörd-ünïcode"},
	}
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{Users: users})
	e := newEnv(t, envOptions{dovecot: dc})
	for _, u := range users {
		t.Run(strings.Split(u.Name, "@")[0], func(t *testing.T) {
			leaf := e.pki.Issue(t, testenv.LeafOptions{Emails: []string{u.Name}})
			c := e.dial(t, leaf)
			c.line()
			c.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", u.Name, len(u.Password), u.Password))
			if got := c.line(); !loginOK.MatchString(got) {
				t.Fatalf("login: %q", got)
			}
		})
	}
}

// TestCertificateExpiresDuringSession: a session outliving its certificate ends with BYE.
func TestCertificateExpiresDuringSession(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaf := e.pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}, NotAfter: time.Now().Add(8 * time.Second)}) // long enough to log in on a loaded machine
	c := e.dial(t, leaf)
	c.line()
	c.send("a LOGIN alice@example.org alice-secret\r\n")
	c.until("a OK")
	c.send("b IDLE\r\n")
	c.until("+ ")
	lines := c.closed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE [ALERT] Your certificate has expired") {
		t.Fatalf("got %q", lines)
	}
}

// TestSpareSessionGoroutines: a goroutine whose session ended waits for the next
// connection (its stack stays grown for the next handshake) and serves it; Close
// ends the waiting ones, so a closed server leaves none behind.
func TestSpareSessionGoroutines(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"})
	for i := 0; i < 5; i++ {
		c := e.dial(t, e.alice)
		if got := c.line(); !strings.HasPrefix(got, "* OK") {
			t.Fatalf("greeting %q", got)
		}
		c.send("a LOGOUT\r\n")
		c.closed()
	}
	waitGoroutines(t, "the sessions to end and wait for the next", func(n int) bool { return n >= 1 && n <= 5 })
	c := e.dial(t, e.alice)
	if got := c.line(); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("greeting from a spare goroutine %q", got)
	}
	c.c.Close()
	e.front.Close()
	waitGoroutines(t, "Close to end the spare goroutines", func(n int) bool { return n == 0 })
}

// waitGoroutines waits until the number of session goroutines (mtls.(*Server).sessionLoop
// in a dump of all goroutines) satisfies ok.
func waitGoroutines(t *testing.T, what string, ok func(int) bool) {
	t.Helper()
	buf := make([]byte, 1<<22)
	var n int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		dump := string(buf[:runtime.Stack(buf, true)])
		n = 0
		for _, g := range strings.Split(dump, "\n\n") {
			if strings.Contains(g, "mtls.(*Server).sessionLoop") {
				n++
			}
		}
		if ok(n) {
			return
		}
	}
	t.Fatalf("waited for %s: %d session goroutines", what, n)
}
