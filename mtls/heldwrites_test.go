package mtls_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
)

// recordingListener hands the front connections that record every write the front
// makes to the client's socket, one entry per write system call.
type recordingListener struct {
	net.Listener
	conns chan *recordingConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c}
	l.conns <- rc
	return rc, nil
}

type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	// Recorded before it is sent: once the client has read it, it is counted.
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordingConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func (c *recordingConn) snapshot() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

// tlsRecords counts the TLS records in one write.
func tlsRecords(b []byte) int {
	n := 0
	for len(b) >= 5 {
		b = b[min(len(b), 5+(int(b[3])<<8|int(b[4]))):]
		n++
	}
	return n
}

// ticketCache tells when the client has stored a session ticket.
type ticketCache struct {
	tls.ClientSessionCache
	put chan struct{}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		select {
		case c.put <- struct{}{}:
		default:
		}
	}
	c.ClientSessionCache.Put(key, cs)
}

// serveRecorded serves one gate of e's front on a new port whose connections record
// the front's writes.
func serveRecorded(t *testing.T, serve func(context.Context, net.Listener, mtls.Mode) error, mode mtls.Mode) (string, chan *recordingConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: ln, conns: make(chan *recordingConn, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { serve(ctx, rl, mode); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), rl.conns
}

// TestTicketWithGreeting: on an implicit-TLS port a full TLS 1.3 handshake's session
// ticket, which crypto/tls writes on its own after the client's certificate, reaches
// the client in the greeting's write — two writes up to the greeting, not three —
// and the client has stored the ticket when it has read the greeting. The handshakes
// that send their ticket in their first flight (a TLS 1.3 resumption) or in a flight
// the client waits for (TLS 1.2) write as before, and a TLS 1.2 resumption, whose
// flight comes after VerifyConnection, must not be held (it would stall).
func TestTicketWithGreeting(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) { o.SMTP.Hostname = "gate.example.org" }})
	for _, tc := range []struct {
		name   string
		serve  func(context.Context, net.Listener, mtls.Mode) error
		greet  string
		vers   uint16
		resume bool
		// writes up to and with the greeting; TLS records in the greeting's write
		writes, records int
	}{
		{"imap_tls13_full", e.front.Serve, "* OK", tls.VersionTLS13, false, 2, 2},
		{"imap_tls13_resumed", e.front.Serve, "* OK", tls.VersionTLS13, true, 2, 1},
		{"imap_tls12_full", e.front.Serve, "* OK", tls.VersionTLS12, false, 3, 1},
		{"imap_tls12_resumed", e.front.Serve, "* OK", tls.VersionTLS12, true, 2, 1},
		{"pop3_tls13_full", e.front.ServePOP3, "+OK", tls.VersionTLS13, false, 2, 2},
		{"smtp_tls13_full", e.front.ServeSMTP, "220 ", tls.VersionTLS13, false, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns := serveRecorded(t, tc.serve, mtls.ImplicitTLS)
			cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), put: make(chan struct{}, 1)}
			cfg := e.clientTLS(e.alice)
			cfg.MaxVersion, cfg.ClientSessionCache = tc.vers, cache
			dial := func() (*lineConn, *recordingConn, bool) {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				c := newLineConn(t, conn)
				if got := c.line(); !strings.HasPrefix(got, tc.greet) {
					t.Fatalf("greeting %q", got)
				}
				return c, <-conns, conn.ConnectionState().DidResume
			}
			if tc.resume {
				c, _, _ := dial()
				c.c.Close()
				<-cache.put
			}
			_, rc, resumed := dial()
			if resumed != tc.resume {
				t.Fatalf("resumed %v, want %v", resumed, tc.resume)
			}
			select {
			case <-cache.put:
			default:
				t.Error("the client has read the greeting but holds no ticket of this connection")
			}
			w := rc.snapshot()
			if len(w) != tc.writes {
				t.Errorf("%d writes up to the greeting, want %d", len(w), tc.writes)
			}
			if got := tlsRecords(w[len(w)-1]); got != tc.records {
				t.Errorf("the greeting's write has %d TLS records, want %d", got, tc.records)
			}
		})
	}
}

// TestTicketAfterStartTLS: after STARTTLS (STLS) the client speaks next, so the
// ticket is not held for a line of ours: the client has it without sending anything,
// in the write after the handshake's flight.
func TestTicketAfterStartTLS(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) { o.SMTP.Hostname = "gate.example.org" }})
	for _, tc := range []struct {
		name  string
		serve func(context.Context, net.Listener, mtls.Mode) error
		// upgrade reads the greeting and asks for TLS up to the ready line
		upgrade func(*lineConn)
	}{
		{"imap", e.front.Serve, func(c *lineConn) { c.line(); c.send("a STARTTLS\r\n"); c.until("a OK") }},
		{"pop3", e.front.ServePOP3, func(c *lineConn) { c.line(); c.send("STLS\r\n"); c.until("+OK") }},
		{"smtp", e.front.ServeSMTP, func(c *lineConn) {
			c.line()
			c.send("EHLO client.example.org\r\n")
			c.until("250 ")
			c.send("STARTTLS\r\n")
			c.until("220 ")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns := serveRecorded(t, tc.serve, mtls.StartTLS)
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := &lineConn{t: t, c: conn, br: bufio.NewReader(conn)}
			tc.upgrade(c)
			rc := <-conns
			ready := len(rc.snapshot())
			cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), put: make(chan struct{}, 1)}
			cfg := e.clientTLS(e.alice)
			cfg.ClientSessionCache = cache
			tlsc := tls.Client(conn, cfg)
			if err := tlsc.Handshake(); err != nil {
				t.Fatal(err)
			}
			// Read only to let crypto/tls take the ticket; no command is sent.
			go tlsc.Read(make([]byte, 1))
			select {
			case <-cache.put:
			case <-time.After(10 * time.Second):
				t.Fatal("no ticket after STARTTLS until the client speaks")
			}
			if got := len(rc.snapshot()) - ready; got != 2 {
				t.Errorf("%d writes from the ready line to the ticket, want 2 (the flight, the ticket)", got)
			}
		})
	}
}

// corruptingConn flips the last byte of the client's second write: in TLS 1.3 that
// is the flight of Certificate, CertificateVerify and Finished, whose last byte is the
// Finished record's authentication tag.
type corruptingConn struct {
	net.Conn
	n int
}

func (c *corruptingConn) Write(p []byte) (int, error) {
	c.n++
	if c.n == 2 {
		p = append([]byte(nil), p...)
		p[len(p)-1] ^= 0xff
	}
	return c.Conn.Write(p)
}

// TestHeldTicketFailureSendsAlert: a full TLS 1.3 handshake that fails after the front
// began to hold its writes (VerifyConnection) — a CertificateVerify that does not
// verify, a Finished record that does not decrypt — still sends the client its alert.
// Go's client has finished its side by then; it learns of the failure from its first
// read, which must be the alert and not just the end of the connection.
func TestHeldTicketFailureSendsAlert(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"})
	wrongKey := e.alice.TLSCertificate()
	wrongKey.PrivateKey = e.bob.Key
	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		corrupt bool
		alert   string
	}{
		{"bad_certificate_verify", wrongKey, false, "error decrypting message"},
		{"bad_finished", e.alice.TLSCertificate(), true, "bad record MAC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var raw net.Conn = conn
			if tc.corrupt {
				raw = &corruptingConn{Conn: conn}
			}
			cfg := e.clientTLS(nil)
			cfg.MaxVersion = tls.VersionTLS13
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc.cert, nil }
			tlsc := tls.Client(raw, cfg)
			tlsc.SetDeadline(time.Now().Add(20 * time.Second))
			if err := tlsc.Handshake(); err != nil {
				t.Fatalf("client handshake: %v (the client should not learn of the failure before reading)", err)
			}
			_, err = tlsc.Read(make([]byte, 64))
			if err == nil || !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("client read: %v; want the front's alert %q", err, tc.alert)
			}
		})
	}
}
