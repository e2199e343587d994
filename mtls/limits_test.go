package mtls

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

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
