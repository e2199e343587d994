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
	a, w, wait, why := th.reserve(serial, ip, cfg, now)
	if a != nil {
		a.release(cfg, now)
	}
	if w != nil {
		th.abandon(w, cfg, now)
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
	b, w, _, _ := th.reserve("dd", ip3, &short, later)
	if b != nil || w == nil {
		t.Fatal("a second login in parallel after the lockout was not made to wait")
	}
	a.failed(&short, later)
	if d, _ := locked(th, "dd", ip3, &short, later); d == 0 {
		t.Fatal("a failure after the lockout did not lock again")
	}
	// The waiting login is sent back to ask again, and is told of the new lockout.
	select {
	case <-w.ready:
	default:
		t.Fatal("the lockout did not send the waiting login back")
	}
	if b, _, _ := th.admit(w, &short, later); b != nil {
		t.Fatal("a login waiting when its certificate was locked out got a place")
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
	for _, from := range []netip.Addr{ip, other} {
		a, w, _, why := th.reserve("aa", from, &cfg, now)
		if a != nil || w == nil || why != "" {
			t.Fatalf("aa from %s over the budget: attempt %v, waiter %v, %q", from, a, w, why)
		}
		th.abandon(w, &cfg, now)
	}
	// Other certificates never wait behind it, from the same address or elsewhere.
	for _, from := range []netip.Addr{ip, other} {
		if a, _, _, _ := th.reserve("bb", from, &cfg, now); a == nil {
			t.Fatalf("another certificate from %s must not wait", from)
		} else {
			a.release(&cfg, now)
		}
	}
	// One failure and two in flight: still no room.
	_, w, _, _ := th.reserve("aa", ip, &cfg, now)
	held[0].failed(&cfg, now)
	if ready(w) {
		t.Fatal("a login was let through with one failure and two logins in flight")
	}
	th.abandon(w, &cfg, now)
	held[1].failed(&cfg, now)
	held[2].failed(&cfg, now)
	if d, why := locked(th, "aa", ip, &cfg, now); d == 0 {
		t.Fatalf("three failures did not lock: %q", why)
	}
	held[2].failed(&cfg, now) // decided twice: no effect
	// A success frees the certificate's budget at once, and releases keep nothing.
	th2 := newThrottle()
	a, _, _, _ := th2.reserve("cc", ip, &cfg, now)
	a.succeeded(&cfg, now)
	b, _, _, _ := th2.reserve("cc", ip, &cfg, now)
	b.release(&cfg, now)
	if n := entries(th2); n != 0 {
		t.Fatalf("throttle keeps %d entries after a success and a release", n)
	}
}

// TestThrottleQueue: logins over a certificate's budget are let through oldest
// first, a newcomer queues behind them, and a place given up (before or after it was
// handed over) goes to the next one.
func TestThrottleQueue(t *testing.T) {
	cfg := Throttle{LockoutAfter: 3}
	cfg.setDefaults()
	th := newThrottle()
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Now()
	// Two failures: one login at a time.
	fail(t, th, "aa", ip, &cfg, now)
	fail(t, th, "aa", ip, &cfg, now)
	first, _, _, _ := th.reserve("aa", ip, &cfg, now)
	var q []*waiter
	for _, from := range []netip.Addr{ip, other, ip} {
		_, w, _, _ := th.reserve("aa", from, &cfg, now)
		if w == nil {
			t.Fatalf("a login from %s over the budget did not queue", from)
		}
		q = append(q, w)
	}
	let := func() (n []int) {
		for i, w := range q {
			if ready(w) {
				n = append(n, i)
			}
		}
		return n
	}
	first.release(&cfg, now)
	if g := let(); !reflect.DeepEqual(g, []int{0}) {
		t.Fatalf("after one place freed, waiters %v let through, want [0]", g)
	}
	// A newcomer queues behind the waiters; the second waiter gives up.
	_, late, _, _ := th.reserve("aa", other, &cfg, now)
	if late == nil {
		t.Fatal("a newcomer was let through ahead of the waiting logins")
	}
	th.abandon(q[1], &cfg, now)
	a0, _, _ := th.admit(q[0], &cfg, now)
	if a0 == nil {
		t.Fatal("the oldest waiter was woken without its place")
	}
	a0.release(&cfg, now)
	if g := let(); !reflect.DeepEqual(g, []int{0, 2}) {
		t.Fatalf("after the second waiter left, waiters %v let through, want [0 2]", g)
	}
	a2, _, _ := th.admit(q[2], &cfg, now)
	_, last, _, _ := th.reserve("aa", ip, &cfg, now)
	a2.release(&cfg, now)
	if !ready(late) || ready(last) {
		t.Fatal("the newcomer was not let through next")
	}
	// The newcomer gives its place up after it was handed over: the last one gets it.
	th.abandon(late, &cfg, now)
	if !ready(last) {
		t.Fatal("a place given up after it was handed over was lost")
	}
	al, _, _ := th.admit(last, &cfg, now)
	al.succeeded(&cfg, now)
	if n := entries(th); n != 1 { // the address's two failures stay
		t.Fatalf("throttle keeps %d entries after every login was decided, want the address's 1", n)
	}
}

// TestThrottleQueueAddressLocked: a place handed to a waiting login whose address was
// locked out meanwhile is given back, and the login is told of the lockout.
func TestThrottleQueueAddressLocked(t *testing.T) {
	cfg := Throttle{LockoutAfter: 1, AddressLockoutCertificates: 2}
	cfg.setDefaults()
	th := newThrottle()
	ip := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	a, _, _, _ := th.reserve("aa", ip, &cfg, now)
	_, w, _, _ := th.reserve("aa", ip, &cfg, now)
	fail(t, th, "bb", ip, &cfg, now)
	fail(t, th, "cc", ip, &cfg, now) // two certificates failed: the address is locked
	a.succeeded(&cfg, now)
	if !ready(w) {
		t.Fatal("the waiting login was not woken")
	}
	if b, wait, why := th.admit(w, &cfg, now); b != nil || wait <= 0 || !strings.Contains(why, "address") {
		t.Fatalf("admitted from a locked address: attempt %v, wait %v, %q", b, wait, why)
	}
	if n := entries(th); n != 3 { // the address and bb's and cc's failures
		t.Fatalf("throttle keeps %d entries, want 3: the place given back was kept", n)
	}
}

func ready(w *waiter) bool {
	select {
	case <-w.ready:
		return true
	default:
		return false
	}
}

func entries(th *throttle) (n int) {
	for i := range th.shards {
		n += len(th.shards[i].m)
	}
	return n
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
