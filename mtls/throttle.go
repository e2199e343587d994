package mtls

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Throttle slows down and then locks out repeated login failures. With mTLS a
// password can only be tried by the holder of a valid certificate, and only for that
// certificate's own mailbox, so the lockout is per certificate; per client address
// (an IPv6 /64) failures only add delay, and the address is locked out only when
// many different certificates fail from it. One card holder's failures never lock
// out another person behind the same NAT address.
type Throttle struct {
	// BaseDelay before the answer to the first failure; it doubles with every further
	// one of the certificate or of the address, whichever has more. Default 1s.
	BaseDelay time.Duration
	// MaxDelay caps the growing delay; default 16s.
	MaxDelay time.Duration
	// LockoutAfter this many failures of one certificate within Window, its further
	// logins are refused for LockoutFor without trying the password. Default 10.
	LockoutAfter int
	// LockoutFor is the temporary lockout; default 15m.
	LockoutFor time.Duration
	// Window after which old failures are forgotten; default 15m.
	Window time.Duration
	// AddressLockoutCertificates: when this many different certificates have failed
	// from one address within Window, the address is locked out for LockoutFor.
	// Default 10.
	AddressLockoutCertificates int
}

func (t *Throttle) validate() error {
	if t.BaseDelay < 0 || t.MaxDelay < 0 || t.LockoutAfter < 0 || t.LockoutFor < 0 || t.Window < 0 || t.AddressLockoutCertificates < 0 {
		return errors.New("mtls: throttle settings must not be negative")
	}
	return nil
}

func (t *Throttle) setDefaults() {
	setDefault(&t.BaseDelay, time.Second)
	setDefault(&t.MaxDelay, 16*time.Second)
	setDefault(&t.LockoutFor, 15*time.Minute)
	setDefault(&t.Window, 15*time.Minute)
	if t.LockoutAfter == 0 {
		t.LockoutAfter = 10
	}
	if t.AddressLockoutCertificates == 0 {
		t.AddressLockoutCertificates = 10
	}
}

// throttle remembers recent login failures per certificate serial and per address,
// and the logins in flight per certificate: a login reserves its attempt before the
// password is checked, so that parallel logins of one certificate cannot get more
// guesses to the backend than its lockout allows. Addresses hold no reservations:
// logins of other certificates from the same address never wait.
type throttle struct {
	shards [shards]throttleShard
	sweeps atomic.Int64
}

type throttleShard struct {
	mu sync.Mutex
	m  map[string]*failures
}

type failures struct {
	count       int
	last        time.Time
	lockedUntil time.Time
	inFlight    int                 // certificate: reserved attempts not yet decided
	wake        chan struct{}       // certificate: made by a waiting login; closed when inFlight drops
	serials     map[string]struct{} // address: the certificates that failed within the window
}

// entry is k's entry, made if missing. The caller holds sh.mu.
func (sh *throttleShard) entry(k string) *failures {
	f := sh.m[k]
	if f == nil {
		f = &failures{}
		sh.m[k] = f
	}
	return f
}

func newThrottle() *throttle {
	t := &throttle{}
	for i := range t.shards {
		t.shards[i].m = map[string]*failures{}
	}
	return t
}

func certKey(serial string) string { return "c:" + serial }
func ipKey(ip netip.Addr) string   { return "i:" + groupAddr(ip).String() }

// attempt is one reserved login. Exactly one of failed, succeeded or release decides
// it; later calls do nothing.
type attempt struct {
	t       *throttle
	serial  string
	ip      netip.Addr
	decided bool
}

// reserve admits one login for the certificate serial from ip. Per certificate,
// failures within the window plus logins in flight stay below LockoutAfter — except
// that one login at a time is always let through when none is in flight, so that
// after a lockout ends the next failure locks again at once. It returns:
//
//   - an attempt, to be decided once the password has been checked;
//   - or wake, when the certificate's budget is held by its logins in flight: wait
//     for it to close (one of them was decided) and ask again;
//   - or, when the certificate or the address is locked out, how long still and why.
func (t *throttle) reserve(serial string, ip netip.Addr, cfg *Throttle, now time.Time) (a *attempt, wake <-chan struct{}, wait time.Duration, why string) {
	if until, n := t.addrLocked(ip, cfg, now); !until.IsZero() {
		return nil, nil, until.Sub(now), fmt.Sprintf("address %s locked out after failed logins of %d different certificates", groupString(ip), n)
	}
	k := certKey(serial)
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.entry(k)
	f.forget(cfg, now)
	switch {
	case now.Before(f.lockedUntil):
		return nil, nil, f.lockedUntil.Sub(now), fmt.Sprintf("certificate %s locked out after %d failed logins", serial, cfg.LockoutAfter)
	case f.inFlight > 0 && f.count+f.inFlight >= cfg.LockoutAfter:
		if f.wake == nil {
			f.wake = make(chan struct{})
		}
		return nil, f.wake, 0, ""
	}
	f.inFlight++
	return &attempt{t: t, serial: serial, ip: ip}, nil, 0, ""
}

// addrLocked is when ip's lockout ends (zero: not locked) and how many certificates
// caused it.
func (t *throttle) addrLocked(ip netip.Addr, cfg *Throttle, now time.Time) (time.Time, int) {
	k := ipKey(ip)
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.m[k]
	if f == nil || !now.Before(f.lockedUntil) {
		return time.Time{}, 0
	}
	return f.lockedUntil, len(f.serials)
}

// forget drops failures older than the window; a lockout runs its own course.
func (f *failures) forget(cfg *Throttle, now time.Time) {
	if f.count > 0 && now.Sub(f.last) > cfg.Window {
		f.count = 0
		f.serials = nil
	}
}

// update applies fn to key k's entry (made if missing), ends one in-flight attempt
// when inFlight says so, wakes waiters and tidies up.
func (t *throttle) update(k string, now time.Time, inFlight bool, fn func(f *failures)) {
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.entry(k)
	if inFlight {
		f.inFlight--
	}
	fn(f)
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
	if f.inFlight == 0 && f.count == 0 && !now.Before(f.lockedUntil) {
		delete(sh.m, k)
	}
}

// failed records a failure for the certificate and the address, ends the attempt and
// returns how long to wait before answering.
func (a *attempt) failed(cfg *Throttle, now time.Time) time.Duration {
	if a.decided {
		return 0
	}
	a.decided = true
	var worst int
	a.t.update(certKey(a.serial), now, true, func(f *failures) {
		f.forget(cfg, now)
		f.count++
		f.last = now
		if f.count >= cfg.LockoutAfter {
			f.lockedUntil = now.Add(cfg.LockoutFor)
		}
		worst = f.count
	})
	a.t.update(ipKey(a.ip), now, false, func(f *failures) {
		f.forget(cfg, now)
		f.count++
		f.last = now
		if len(f.serials) < cfg.AddressLockoutCertificates { // bounded
			if f.serials == nil {
				f.serials = map[string]struct{}{}
			}
			f.serials[a.serial] = struct{}{}
		}
		if len(f.serials) >= cfg.AddressLockoutCertificates {
			f.lockedUntil = now.Add(cfg.LockoutFor)
		}
		worst = max(worst, f.count)
	})
	if a.t.sweeps.Add(1)%1024 == 0 {
		a.t.sweep(cfg, now)
	}
	d := cfg.BaseDelay
	for i := 1; i < worst && d < cfg.MaxDelay; i++ {
		d *= 2
	}
	return min(d, cfg.MaxDelay)
}

// succeeded forgets the certificate's failures and ends the attempt. The address keeps
// its own: many users may share one NAT address, and one user's success says nothing
// about another's guessing.
func (a *attempt) succeeded(now time.Time) {
	if a.decided {
		return
	}
	a.decided = true
	a.t.update(certKey(a.serial), now, true, func(f *failures) {
		f.count = 0
		f.lockedUntil = time.Time{}
	})
}

// release ends the attempt without a verdict (the backend was unavailable).
func (a *attempt) release(now time.Time) {
	if a.decided {
		return
	}
	a.decided = true
	a.t.update(certKey(a.serial), now, true, func(*failures) {})
}

// sweep drops entries that are neither recent, locked nor in use, so memory stays
// bounded.
func (t *throttle) sweep(cfg *Throttle, now time.Time) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, f := range sh.m {
			if f.inFlight == 0 && f.wake == nil && now.Sub(f.last) > cfg.Window && now.After(f.lockedUntil) {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}
