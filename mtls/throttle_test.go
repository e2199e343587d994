package mtls

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fail reserves a login and fails it, as a wrong password does.
func fail(t *testing.T, th *throttle, serial string, ip netip.Addr, cfg *Throttle, now time.Time) time.Duration {
	t.Helper()
	a, _, _, why := th.reserve(serial, ip, cfg, now)
	if a == nil {
		t.Fatalf("login %s from %s not admitted: %q", serial, ip, why)
	}
	return a.failed(cfg, now)
}

// locked is how long serial from ip is still locked out (0: not).
func locked(th *throttle, serial string, ip netip.Addr, cfg *Throttle, now time.Time) (time.Duration, string) {
	a, _, wait, why := th.reserve(serial, ip, cfg, now)
	if a != nil {
		a.release(now)
	}
	return wait, why
}

func TestThrottleGrowthAndLockout(t *testing.T) {
	cfg := Throttle{}
	cfg.setDefaults()
	th := newThrottle()
	ip := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	var delays []time.Duration
	for i := 0; i < 6; i++ {
		delays = append(delays, fail(t, th, "aa", ip, &cfg, now))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 16 * time.Second}
	if !reflect.DeepEqual(delays, want) {
		t.Fatalf("delays %v, want %v", delays, want)
	}
	if d, _ := locked(th, "aa", ip, &cfg, now); d != 0 {
		t.Fatal("locked before lockout_after")
	}
	for i := 0; i < 4; i++ {
		fail(t, th, "aa", ip, &cfg, now)
	}
	if d, why := locked(th, "aa", ip, &cfg, now); d == 0 || !strings.Contains(why, "certificate aa") {
		t.Fatalf("not locked after 10 failures: %v %q", d, why)
	}
	// Another certificate from the same address (another person behind the same NAT)
	// is not locked out: one card holder's failures lock only that card.
	if d, why := locked(th, "bb", ip, &cfg, now); d != 0 {
		t.Fatalf("another certificate from the same address locked out: %q", why)
	}
	// The address's failures add delay to the other certificate's first failure.
	if d := fail(t, th, "bb", ip, &cfg, now); d != cfg.MaxDelay {
		t.Fatalf("first failure of another certificate after 10 from its address: delay %v, want %v", d, cfg.MaxDelay)
	}
	if d := fail(t, th, "bb", netip.MustParseAddr("192.0.2.2"), &cfg, now); d != 2*cfg.BaseDelay {
		t.Fatalf("second failure of bb from elsewhere: delay %v, want %v", d, 2*cfg.BaseDelay)
	}
	later := now.Add(cfg.LockoutFor + time.Second)
	if d, _ := locked(th, "aa", ip, &cfg, later); d != 0 {
		t.Fatal("lockout did not expire")
	}
	// With a lockout shorter than the window, the failures are still remembered when
	// it ends: one login at a time is let through, and its failure locks again at once.
	short := Throttle{LockoutAfter: 2, LockoutFor: time.Minute, Window: time.Hour}
	short.setDefaults()
	ip3 := netip.MustParseAddr("192.0.2.3")
	fail(t, th, "dd", ip3, &short, now)
	fail(t, th, "dd", ip3, &short, now)
	later = now.Add(2 * time.Minute)
	a, _, _, why := th.reserve("dd", ip3, &short, later)
	if a == nil {
		t.Fatalf("no login after the lockout: %q", why)
	}
	if b, wake, _, _ := th.reserve("dd", ip3, &short, later); b != nil || wake == nil {
		t.Fatal("a second login in parallel after the lockout was not made to wait")
	}
	a.failed(&short, later)
	if d, _ := locked(th, "dd", ip3, &short, later); d == 0 {
		t.Fatal("a failure after the lockout did not lock again")
	}
}

// TestThrottleInFlight: logins in flight count against the lockout budget, per
// certificate and per address; a login over the budget waits until one is decided.
func TestThrottleInFlight(t *testing.T) {
	cfg := Throttle{LockoutAfter: 3}
	cfg.setDefaults()
	th := newThrottle()
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Now()
	var held []*attempt
	for i := 0; i < 3; i++ {
		a, _, _, why := th.reserve("aa", ip, &cfg, now)
		if a == nil {
			t.Fatalf("login %d not admitted: %q", i+1, why)
		}
		held = append(held, a)
	}
	// The certificate's budget is taken, from any address.
	for _, tc := range []struct {
		serial string
		ip     netip.Addr
	}{{"aa", ip}, {"aa", other}} {
		a, wake, _, why := th.reserve(tc.serial, tc.ip, &cfg, now)
		if a != nil || wake == nil || why != "" {
			t.Fatalf("%s from %s over the budget: attempt %v, wake %v, %q", tc.serial, tc.ip, a, wake, why)
		}
	}
	// Other certificates never wait behind it, from the same address or elsewhere.
	for _, from := range []netip.Addr{ip, other} {
		if a, _, _, _ := th.reserve("bb", from, &cfg, now); a == nil {
			t.Fatalf("another certificate from %s must not wait", from)
		} else {
			a.release(now)
		}
	}
	_, wake, _, _ := th.reserve("aa", ip, &cfg, now)
	held[0].failed(&cfg, now)
	select {
	case <-wake:
	default:
		t.Fatal("a decided login did not wake the waiting one")
	}
	// One failure and two in flight: still no room.
	if a, _, _, _ := th.reserve("aa", ip, &cfg, now); a != nil {
		t.Fatal("admitted with one failure and two logins in flight")
	}
	held[1].failed(&cfg, now)
	held[2].failed(&cfg, now)
	if d, why := locked(th, "aa", ip, &cfg, now); d == 0 {
		t.Fatalf("three failures did not lock: %q", why)
	}
	held[2].failed(&cfg, now) // decided twice: no effect
	// A success frees the certificate's budget at once, and releases keep nothing.
	th2 := newThrottle()
	a, _, _, _ := th2.reserve("cc", ip, &cfg, now)
	a.succeeded(now)
	b, _, _, _ := th2.reserve("cc", ip, &cfg, now)
	b.release(now)
	for i := range th2.shards {
		if n := len(th2.shards[i].m); n != 0 {
			t.Fatalf("throttle keeps %d entries after a success and a release", n)
		}
	}
}

// TestThrottleAddressLockout: an address is locked out only once many different
// certificates have failed from it (address_lockout_certificates); then every
// certificate from it is refused, and other addresses are not.
func TestThrottleAddressLockout(t *testing.T) {
	cfg := Throttle{AddressLockoutCertificates: 3, LockoutAfter: 100}
	cfg.setDefaults()
	th := newThrottle()
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Now()
	// One certificate failing many times does not lock the address.
	for i := 0; i < 20; i++ {
		fail(t, th, "aa", ip, &cfg, now)
	}
	fail(t, th, "bb", ip, &cfg, now)
	if d, why := locked(th, "zz", ip, &cfg, now); d != 0 {
		t.Fatalf("address locked after two certificates failed: %q", why)
	}
	fail(t, th, "cc", ip, &cfg, now)
	d, why := locked(th, "zz", ip, &cfg, now)
	if d == 0 || !strings.Contains(why, "address 192.0.2.1") || !strings.Contains(why, "3 different certificates") {
		t.Fatalf("three certificates failed from one address: %v %q", d, why)
	}
	if d, why := locked(th, "zz", other, &cfg, now); d != 0 {
		t.Fatalf("another address locked: %q", why)
	}
	if d, _ := locked(th, "zz", ip, &cfg, now.Add(cfg.LockoutFor+time.Second)); d != 0 {
		t.Fatal("address lockout did not end")
	}
}

// TestThrottleIPv6: failures from many addresses of one /64 add up as one address's,
// for the delay and the address lockout.
func TestThrottleIPv6(t *testing.T) {
	cfg := Throttle{AddressLockoutCertificates: 3, LockoutAfter: 100}
	cfg.setDefaults()
	th := newThrottle()
	now := time.Now()
	for i, serial := range []string{"aa", "bb", "cc"} {
		fail(t, th, serial, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), &cfg, now)
	}
	d, why := locked(th, "zz", netip.MustParseAddr("2001:db8::ffff"), &cfg, now)
	if d == 0 || !strings.Contains(why, "2001:db8::/64") {
		t.Fatalf("three certificates failed from one /64: %v %q", d, why)
	}
	if d, why := locked(th, "zz", netip.MustParseAddr("2001:db8:0:1::1"), &cfg, now); d != 0 {
		t.Fatalf("another /64 locked: %q", why)
	}
}
