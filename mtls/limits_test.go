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

// TestGroupAddr: an IPv6 client is its /64 for every per-address limit; IPv4 and
// IPv4-mapped addresses stand for themselves.
func TestGroupAddr(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"fe80::1%eth0", "fe80::2%eth1", true},
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
	} {
		a, b := netip.MustParseAddr(tc.a), netip.MustParseAddr(tc.b)
		if same := groupAddr(a) == groupAddr(b); same != tc.same {
			t.Errorf("groupAddr(%s) == groupAddr(%s): %v, want %v", tc.a, tc.b, same, tc.same)
		}
	}
	if got := groupString(netip.MustParseAddr("2001:db8:1:2::7")); got != "2001:db8:1:2::/64" {
		t.Errorf("groupString = %q", got)
	}
}

// TestConnLimiterIPv6: addresses of one /64 share max_connections_per_ip and the
// handshake budget; another /64 has its own.
func TestConnLimiterIPv6(t *testing.T) {
	l := newConnLimiter()
	lim := Limits{MaxConnections: 100, MaxConnectionsPerIP: 2, HandshakesPerIPPerMinute: 2}
	now := time.Now()
	r1, why := l.acquire(netip.MustParseAddr("2001:db8::1"), &lim, now)
	if why != "" {
		t.Fatal(why)
	}
	defer r1()
	r2, why := l.acquire(netip.MustParseAddr("2001:db8::2"), &lim, now)
	if why != "" {
		t.Fatal(why)
	}
	defer r2()
	if _, why := l.acquire(netip.MustParseAddr("2001:db8::3"), &lim, now); !strings.Contains(why, "per_ip") {
		t.Fatalf("third connection from one /64: %q", why)
	}
	r3, why := l.acquire(netip.MustParseAddr("2001:db8:0:1::1"), &lim, now)
	if why != "" {
		t.Fatalf("another /64: %q", why)
	}
	defer r3()
	l.handshakeAllowed(netip.MustParseAddr("2001:db8::1"), &lim, now)
	l.handshakeAllowed(netip.MustParseAddr("2001:db8::2"), &lim, now)
	if l.handshakeAllowed(netip.MustParseAddr("2001:db8::abcd"), &lim, now) {
		t.Fatal("handshake budget of a /64 not shared")
	}
}
