package mtls

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
// guesses to the backend than its lockout allows. Logins over that budget queue, and
// each place freed goes to the oldest of them: waking every waiter to race for one
// place let the unlucky ones lose round after round, which was the tail of the login
// latency when a mail program or a NAT'd office opens many connections of one card.
// Addresses hold no reservations: logins of other certificates from the same address
// never wait.
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
	waiters     []*waiter           // certificate: logins over the budget, oldest first
	serials     map[string]struct{} // address: the certificates that failed within the window
}

// room says whether the certificate's budget admits one more login now: failures
// within the window plus logins in flight stay below LockoutAfter, and one login at
// a time is always let through when none is in flight, so that after a lockout ends
// the next failure locks again at once.
func (f *failures) room(cfg *Throttle) bool {
	return f.inFlight == 0 || f.count+f.inFlight < cfg.LockoutAfter
}

// waiter is a login queued for a place in its certificate's budget. The throttle
// hands it the place itself (a is set, then ready closed), or, when the certificate
// was locked out meanwhile, closes ready with a nil to make it ask again and be told.
type waiter struct {
	ready  chan struct{}
	a      *attempt // written under the shard's lock before ready is closed
	serial string
	ip     netip.Addr
}

// grant gives the free places of the certificate entry f to its oldest waiters, or,
// when f is locked out, sends every waiter back to ask again. The caller holds the
// shard's lock.
func (t *throttle) grant(f *failures, cfg *Throttle, now time.Time) {
	if now.Before(f.lockedUntil) {
		for _, w := range f.waiters {
			close(w.ready)
		}
		f.waiters = nil
		return
	}
	for len(f.waiters) > 0 && f.room(cfg) {
		w := f.waiters[0]
		f.waiters[0] = nil
		f.waiters = f.waiters[1:]
		f.inFlight++
		w.a = &attempt{t: t, serial: w.serial, ip: w.ip}
		close(w.ready)
	}
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

// reserve admits one login for the certificate serial from ip while its budget has
// room (failures.room). It returns:
//
//   - an attempt, to be decided once the password has been checked;
//   - or a waiter, queued behind the logins already waiting, when the budget is held
//     by logins in flight: wait for its ready, then take its place with admit (or
//     give it up with abandon);
//   - or, when the certificate or the address is locked out, how long still and why.
func (t *throttle) reserve(serial string, ip netip.Addr, cfg *Throttle, now time.Time) (a *attempt, w *waiter, wait time.Duration, why string) {
	if wait, why := t.addrLocked(ip, now); why != "" {
		return nil, nil, wait, why
	}
	k := certKey(serial)
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.entry(k)
	f.forget(cfg, now)
	t.grant(f, cfg, now) // failures may have aged out while logins waited
	switch {
	case now.Before(f.lockedUntil):
		return nil, nil, f.lockedUntil.Sub(now), fmt.Sprintf("certificate %s locked out after %d failed logins", serial, cfg.LockoutAfter)
	case len(f.waiters) > 0 || !f.room(cfg):
		w := &waiter{ready: make(chan struct{}), serial: serial, ip: ip}
		f.waiters = append(f.waiters, w)
		return nil, w, 0, ""
	}
	f.inFlight++
	return &attempt{t: t, serial: serial, ip: ip}, nil, 0, ""
}

// admit is what a waiter whose ready was closed got: the attempt it was handed, or
// nil to ask again. A place handed over while its address got locked out is given
// back, with the lockout's wait and reason, as reserve would have answered.
func (t *throttle) admit(w *waiter, cfg *Throttle, now time.Time) (a *attempt, wait time.Duration, why string) {
	if w.a == nil {
		return nil, 0, ""
	}
	if wait, why := t.addrLocked(w.ip, now); why != "" {
		w.a.release(cfg, now)
		return nil, wait, why
	}
	return w.a, 0, ""
}

// abandon gives up w's wait (a timeout, the session ended): it leaves the queue, or
// gives back the place it was handed meanwhile and will not use.
func (t *throttle) abandon(w *waiter, cfg *Throttle, now time.Time) {
	k := certKey(w.serial)
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	granted := w.a
	if f := sh.m[k]; f != nil && granted == nil {
		if i := slices.Index(f.waiters, w); i >= 0 {
			f.waiters = slices.Delete(f.waiters, i, i+1)
		}
	}
	sh.mu.Unlock()
	if granted != nil {
		granted.release(cfg, now)
	}
}

// addrLocked is how long ip's lockout still runs and why; why is empty when ip is not
// locked out.
func (t *throttle) addrLocked(ip netip.Addr, now time.Time) (wait time.Duration, why string) {
	k := ipKey(ip)
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.m[k]
	if f == nil || !now.Before(f.lockedUntil) {
		return 0, ""
	}
	return f.lockedUntil.Sub(now), fmt.Sprintf("address %s locked out after failed logins of %d different certificates", groupString(ip), len(f.serials))
}

// forget drops failures older than the window; a lockout runs its own course.
func (f *failures) forget(cfg *Throttle, now time.Time) {
	if f.count > 0 && now.Sub(f.last) > cfg.Window {
		f.count = 0
		f.serials = nil
	}
}

// update applies fn to key k's entry (made if missing); for a certificate's entry
// (inFlight) it ends one attempt in flight and hands the places freed to the waiters.
// Then it tidies up.
func (t *throttle) update(k string, cfg *Throttle, now time.Time, inFlight bool, fn func(f *failures)) {
	sh := &t.shards[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.entry(k)
	if inFlight {
		f.inFlight--
	}
	fn(f)
	if inFlight {
		t.grant(f, cfg, now)
	}
	if f.inFlight == 0 && len(f.waiters) == 0 && f.count == 0 && !now.Before(f.lockedUntil) {
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
	a.t.update(certKey(a.serial), cfg, now, true, func(f *failures) {
		f.forget(cfg, now)
		f.count++
		f.last = now
		if f.count >= cfg.LockoutAfter {
			f.lockedUntil = now.Add(cfg.LockoutFor)
		}
		worst = f.count
	})
	a.t.update(ipKey(a.ip), cfg, now, false, func(f *failures) {
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
func (a *attempt) succeeded(cfg *Throttle, now time.Time) {
	if a.decided {
		return
	}
	a.decided = true
	a.t.update(certKey(a.serial), cfg, now, true, func(f *failures) {
		f.count = 0
		f.lockedUntil = time.Time{}
	})
}

// release ends the attempt without a verdict (the backend was unavailable).
func (a *attempt) release(cfg *Throttle, now time.Time) {
	if a.decided {
		return
	}
	a.decided = true
	a.t.update(certKey(a.serial), cfg, now, true, func(*failures) {})
}

// sweep drops entries that are neither recent, locked nor in use, so memory stays
// bounded.
func (t *throttle) sweep(cfg *Throttle, now time.Time) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, f := range sh.m {
			if f.inFlight == 0 && len(f.waiters) == 0 && now.Sub(f.last) > cfg.Window && now.After(f.lockedUntil) {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}
