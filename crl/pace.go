package crl

import (
	"context"
	"time"
)

// A reload is background work next to the handshakes it must not slow down. Reading a
// million new entries takes about 200 ms of one core, and on a front whose cores the
// handshakes keep busy those are 200 ms the handshakes do not get: the handshake rate
// dipped by 10–15 % for the second it happened in (docs/performance.md, target 7), the
// same dip as 0.2 s of any other process's CPU. So a large reload spreads its work out:
// after each piece of work it sleeps paceRatio times as long as the piece took, which
// holds it to an eighth of a core. Under contention a piece takes longer than its CPU
// time and the sleeps grow with it, so a busy front gives the reload less of a core,
// not more. The sleeps end paceFor after the reload began, whatever is left, so that a
// million entries are in place within about 1.5 s (the target is 2 s) and a
// revocation reaches the front within a poll interval and that. Measured side by side,
// a million new entries' lowest 1 s bucket went from 0.84–0.86× to 0.90–0.93×, the
// noise of the buckets around it: the same CPU, spread.
//
// What is paced: the SHA-256 of the entries, reading them and sorting them, about 80 %
// of the work; the read of the file or the body and the signature's hash run in one
// go. Not paced: the first load of a Store and a reload while its CRL is stale (until
// they are done the front refuses every handshake of the CA), Parse, and CRLs whose entries take less than paceMinBytes: a
// 100,000-entry CRL costs 20 ms, 1 % of a second of two cores, and stays as fast as it
// was (the target is 200 ms).

const (
	paceRatio = 7
	paceFor   = 1400 * time.Millisecond
	// paceMinBytes: about 200,000 entries in the CA's format (50 bytes an entry).
	paceMinBytes = 10 << 20
	// pacePiece is how many entries (or sort steps) make a piece, 3–5 ms of work. A
	// sleep costs the work after it its caches (the handshakes run meanwhile): pieces
	// of 16,384 made a paced million 20 % dearer in CPU than an unpaced one, these 16 %.
	pacePiece = 1 << 16
	// paceBytes is how much of the entries a piece of their SHA-256 hashes (about 1 ms).
	paceBytes = 1 << 20
)

// pacer spreads one reload's work over time; a nil pacer does not pace.
type pacer struct {
	ratio float64
	until time.Time // no sleep goes past this
	since time.Time // when the current piece of work began
	slept time.Duration
	sleep func(time.Duration) // time.Sleep; the tests record instead
}

// newPacer paces a reload that began at start. When ctx ends (the front stops), the
// rest of the reload runs without sleeps.
func newPacer(ctx context.Context, start time.Time) *pacer {
	p := &pacer{ratio: paceRatio, until: start.Add(paceFor), since: time.Now()}
	p.sleep = func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			p.until = time.Time{}
		}
	}
	return p
}

// forSize is p for entries of size bytes, or nil (no pacing) for fewer than paceMinBytes.
func (p *pacer) forSize(size int) *pacer {
	if size < paceMinBytes {
		return nil
	}
	return p
}

// pause ends a piece of work: it sleeps ratio times the piece's time, up to p.until.
func (p *pacer) pause() {
	if p == nil {
		return
	}
	now := time.Now()
	d := min(time.Duration(float64(now.Sub(p.since))*p.ratio), p.until.Sub(now))
	if d > 0 {
		p.sleep(d)
		after := time.Now()
		p.slept += after.Sub(now) // what was slept: a stopping front cuts a sleep short
		now = after
	}
	p.since = now
}

// step is pause every pacePiece-th time it is called with i = 0, 1, 2…: the loops that
// read or sort the entries call it once an iteration.
func (p *pacer) step(i int) {
	if i&(pacePiece-1) == pacePiece-1 && p != nil {
		p.pause()
	}
}

// sleptFor is how long the reload slept, for the log (zero for a nil pacer).
func (p *pacer) sleptFor() time.Duration {
	if p == nil {
		return 0
	}
	return p.slept
}
