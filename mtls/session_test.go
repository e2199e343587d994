package mtls_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/testenv"
)

// eofConn records whether the TCP stream itself ended under a TLS client: a Go TLS
// client takes a bare TCP end at a record boundary for io.EOF too, so only this tells a
// close_notify (the TLS layer ends the stream before TCP does) from a cut connection.
type eofConn struct {
	net.Conn
	tcpEOF atomic.Bool
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		c.tcpEOF.Store(true)
	}
	return n, err
}

// TestCleanClose: every end of a session — LOGOUT before login, LOGOUT after it (the
// backend closes), a BYE from the front (too many bad commands, revocation of a live
// session) — sends TLS close_notify before the connection closes, so a client reads a
// clean end of stream (openssl s_client reported "unexpected eof while reading").
func TestCleanClose(t *testing.T) {
	e := newEnv(t, envOptions{})
	login := func(c *lineConn) {
		c.send("a LOGIN " + testenv.Alice.Name + " " + testenv.Alice.Password + "\r\n")
		if got := c.until("a "); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("login: %q", got)
		}
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *lineConn)
	}{
		{"logout before login", func(t *testing.T, c *lineConn) { c.send("z LOGOUT\r\n") }},
		{"logout after login", func(t *testing.T, c *lineConn) {
			login(c)
			c.send("z LOGOUT\r\n")
		}},
		{"too many bad commands", func(t *testing.T, c *lineConn) {
			c.send(strings.Repeat("x BOGUS\r\n", 5))
		}},
		{"revoked while logged in", func(t *testing.T, c *lineConn) {
			login(c)
			e.pki.Revoke(e.alice.Cert.SerialNumber)
			e.publishCRL(t, testenv.CRLOptions{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			ec := &eofConn{Conn: raw}
			tconn := tls.Client(ec, e.clientTLS(e.alice))
			c := newLineConn(t, tconn)
			c.line() // greeting
			tc.run(t, c)
			var last string
			for {
				s, err := c.readLine()
				if err == nil {
					last = s
					continue
				}
				if !errors.Is(err, io.EOF) {
					t.Fatalf("read after %q: %v, want io.EOF", last, err)
				}
				break
			}
			if ec.tcpEOF.Load() {
				t.Fatalf("the connection ended without TLS close_notify (last line %q)", last)
			}
		})
	}

	t.Run("openssl s_client", func(t *testing.T) {
		cert, key := e.bob.WriteFiles(t, t.TempDir(), "bob")
		out := opensslClient(t, e.addr, "a LOGIN "+testenv.Bob.Name+" "+testenv.Bob.Password+"\nz LOGOUT\n", "-cert", cert, "-key", key)
		if !strings.Contains(out, "z OK") {
			t.Fatalf("openssl s_client did not log out:\n%s", out)
		}
		if strings.Contains(out, "unexpected eof") {
			t.Fatalf("openssl s_client saw the connection cut without close_notify:\n%s", out)
		}
	})
}

// TestLeftClientClosedQuietly: a client that ends its side while the front waits for
// its next command (with close_notify, or with a bare TCP FIN) is gone: the front
// closes the socket without a close_notify or any other write of its own and without
// lingering. The front's own ends (BYE, LOGOUT) keep their close_notify (TestCleanClose).
func TestLeftClientClosedQuietly(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1"})
	for _, tc := range []struct {
		name        string
		closeNotify bool
	}{
		{"close_notify", true},
		{"tcp_fin", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			tconn := tls.Client(raw, e.clientTLS(e.alice))
			if got := newLineConn(t, tconn).line(); !strings.HasPrefix(got, "* OK") {
				t.Fatalf("greeting %q", got)
			}
			// The front sends nothing after the greeting (and TLS 1.3's tickets before
			// it) until it closes, so what the socket still delivers now is all the
			// front writes from here on.
			if tc.closeNotify {
				if err := tconn.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			if err := raw.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := io.ReadAll(raw)
			if err != nil {
				t.Fatalf("read after our end: %v (after %d bytes)", err, len(rest))
			}
			if len(rest) != 0 {
				t.Errorf("the front wrote %d bytes to a client that had left (a close_notify is 24)", len(rest))
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("the front took %v to close after the client left", d)
			}
		})
	}
}
