package mtls_test

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/mtls"
)

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestResumptionMaxAge: a TLS session resumes only within tls.resumption_max_age of the
// full handshake in which the card proved the key. Resuming does not renew it (Go
// issues a new ticket on every resumption; before, one resumption every few days kept a
// session alive without the card for ever), and after the bound the card must sign a
// full handshake again. Both TLS 1.3 and 1.2 tickets.
func TestResumptionMaxAge(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			clock := &testClock{t: time.Now()}
			e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
				o.Time = clock.Now
				o.ResumptionMaxAge = time.Hour
			}})
			cfg := e.clientTLS(e.alice)
			cfg.MaxVersion = version
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			dial := func() bool { t.Helper(); return dialResumed(t, e, cfg) }
			if dial() {
				t.Fatal("the first connection resumed")
			}
			clock.Add(40 * time.Minute)
			if !dial() {
				t.Fatal("no resumption 40 minutes after the full handshake")
			}
			clock.Add(30 * time.Minute) // 70 minutes after the card signed, 30 after the last ticket
			if dial() {
				t.Fatal("resumed 70 minutes after the full handshake: resuming renewed the bound")
			}
			clock.Add(10 * time.Minute)
			if !dial() {
				t.Fatal("the ticket of the new full handshake does not resume")
			}
		})
	}
}

// TestResumptionMaxAgePerClient: the proof time is per handshake, although the
// handshakes' TLS configurations are pooled and one handshake's configuration is the
// next one's: two clients whose cards signed 50 minutes apart resume in turn, and each
// keeps its own bound.
func TestResumptionMaxAgePerClient(t *testing.T) {
	clock := &testClock{t: time.Now()}
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
		o.Time = clock.Now
		o.ResumptionMaxAge = time.Hour
	}})
	client := func() func() bool {
		cfg := e.clientTLS(e.alice)
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		return func() bool { t.Helper(); return dialResumed(t, e, cfg) }
	}
	early, late := client(), client()
	if early() {
		t.Fatal("the first client's first connection resumed")
	}
	clock.Add(50 * time.Minute)
	if late() {
		t.Fatal("the second client's first connection resumed")
	}
	for i, want := range []struct {
		advance     time.Duration
		early, late bool
	}{
		{5 * time.Minute, true, true},   // 55 minutes after the first card signed, 5 after the second
		{10 * time.Minute, false, true}, // 65 and 15
	} {
		clock.Add(want.advance)
		if got := early(); got != want.early {
			t.Fatalf("round %d: the first client resumed %v, want %v", i, got, want.early)
		}
		if got := late(); got != want.late {
			t.Fatalf("round %d: the second client resumed %v, want %v", i, got, want.late)
		}
	}
}

// dialResumed connects with cfg, reads the greeting (with TLS 1.3 the ticket comes
// with it), logs out and reports whether the TLS session was resumed.
func dialResumed(t *testing.T, e *env, cfg *tls.Config) bool {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newLineConn(t, conn)
	if got := c.line(); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("greeting %q", got)
	}
	c.send("a LOGOUT\r\n")
	c.closed()
	return conn.ConnectionState().DidResume
}
