package mtls_test

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
	"github.com/imapgate/imapgate/testenv"
)

// TestPreAuthTotal: a client that never logs in but sends a NOOP before each
// timeouts.preauth runs out is still ended after timeouts.preauth_total, on the TLS port
// and on the plain port (where STARTTLS does not start the count again).
func TestPreAuthTotal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     mtls.Mode
		starttls bool
	}{
		{"tls port", mtls.ImplicitTLS, false},
		{"plain port", mtls.StartTLS, false},
		{"plain port then STARTTLS", mtls.StartTLS, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mode: tc.mode, mod: func(o *mtls.Options) {
				o.PreAuthTimeout = time.Minute
				o.PreAuthTotal = 1500 * time.Millisecond
			}})
			var c *lineConn
			if tc.mode == mtls.ImplicitTLS {
				c = e.dial(t, e.alice)
			} else {
				raw, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c = newLineConn(t, raw)
			}
			c.line() // greeting
			if tc.starttls {
				c.send("s STARTTLS\r\n")
				if got := c.line(); got != "s OK Begin TLS negotiation now." {
					t.Fatalf("STARTTLS: %q", got)
				}
				tc := tls.Client(c.c, e.clientTLS(e.alice))
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = &lineConn{t: t, c: tc, br: bufio.NewReader(tc)}
			}
			// NOOPs well inside timeouts.preauth, until the front ends the session.
			for i := 0; ; i++ {
				if i > 100 {
					t.Fatal("the session outlived timeouts.preauth_total by far")
				}
				c.send("n NOOP\r\n")
				got, err := c.readLine()
				if err != nil {
					t.Fatalf("connection ended without a BYE: %v", err)
				}
				if strings.HasPrefix(got, "* BYE") {
					if !strings.Contains(got, "no login for too long") {
						t.Fatalf("BYE %q", got)
					}
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !strings.Contains(e.logs.String(), `"result":"preauth_total"`) {
				t.Errorf("log lacks result preauth_total")
			}
		})
	}
}

// TestMaxPlainCommands: on the plain port a client gets limits.max_plain_commands
// commands before STARTTLS, then BYE.
func TestMaxPlainCommands(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mode: mtls.StartTLS, mod: func(o *mtls.Options) {
		o.Limits.MaxPlainCommands = 3
	}})
	raw, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := newLineConn(t, raw)
	c.line()
	for i := 0; i < 3; i++ {
		c.send("n NOOP\r\n")
		if got := c.line(); got != "n OK NOOP completed." {
			t.Fatalf("NOOP %d: %q", i+1, got)
		}
	}
	c.send("n NOOP\r\n")
	if got := c.closed(); len(got) != 1 || got[0] != "* BYE Too many commands before STARTTLS." {
		t.Fatalf("fourth command: %q", got)
	}
}

// TestPreAuthShare: connections not logged in hold at most limits.preauth_share of
// max_connections; a logged-in session gives its place back, so an IDLE user is never
// crowded out by connections that do not log in, and the room it leaves is not taken
// by them either.
func TestPreAuthShare(t *testing.T) {
	e := newEnv(t, envOptions{mod: func(o *mtls.Options) {
		o.Limits.MaxConnections = 4
		o.Limits.PreAuthShare = 50 // two connections before login
	}})
	login := func(c *lineConn) {
		c.send("a LOGIN " + testenv.Alice.Name + " " + testenv.Alice.Password + "\r\n")
		if got := c.until("a "); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("login: %q", got)
		}
	}
	greeted := func() *lineConn {
		c := e.dial(t, e.alice)
		if got := c.line(); !strings.HasPrefix(got, "* OK") {
			t.Fatalf("greeting %q", got)
		}
		return c
	}
	refused := func(why string) {
		conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := newLineConn(t, conn)
		if got := c.closed(); len(got) != 0 {
			t.Fatalf("%s: connection served: %q", why, got)
		}
	}
	idle := greeted()
	login(idle) // an IDLE user: no longer counts against the pre-auth share
	a, b := greeted(), greeted()
	refused("a third connection before login")
	if got := counter(t, e.front.Metrics(), "imapgate_front_sessions_preauth"); got != 2 {
		t.Errorf("imapgate_front_sessions_preauth %v, want 2", got)
	}
	if !strings.Contains(e.logs.String(), "limits.preauth_share 50% of 4") {
		t.Errorf("log does not say the pre-auth share was full")
	}
	login(a) // a place in the share comes back; three of four connections are open
	d := greeted()
	refused("the fifth connection (max_connections)")
	for _, c := range []*lineConn{b, d} {
		c.send("x NOOP\r\n")
		if got := c.line(); got != "x OK NOOP completed." {
			t.Fatalf("a connection before login: %q", got)
		}
	}
	idle.send("i NOOP\r\n")
	if got := idle.until("i "); !strings.HasPrefix(got, "i OK") {
		t.Fatalf("the logged-in session after the flood: %q", got)
	}
}
