package mtls

import (
	"context"
	"runtime/metrics"
	"time"
)

// gcBallastSize is the GC headroom the front keeps while its heap is small (gcHeadroom).
const gcBallastSize = 8 << 20

// gcHeadroom gives the collector gcBallastSize of headroom while the live heap is
// small: a pointer-free slice that is never touched, so it costs no resident memory
// and no marking, but counts toward the heap the next collection is paced from (twice
// the live heap, at least 4 MB). Each handshake leaves some 40-60 KB of garbage; the
// imapgate binary's package initialisation leaves about 2.6 MB live (the CA's
// dependencies; a bare crypto/tls server 0.3 MB), so a front with few sessions
// collected every ~45 connections and marked 2.6 MB each time — about 58 KB marked per
// connection against the bare server's 7 KB, the 10-20 % of CPU by which resumed
// handshakes trailed it (docs/performance.md). With the ballast a collection comes
// every ~200 connections. It lets at most gcBallastSize more garbage build up between
// collections, and only while the live heap is below 4 × gcBallastSize: past that the
// live heap alone spaces collections as far apart, and the ballast goes (so thousands
// of idle sessions carry none of it); it comes back once the live heap is below
// gcBallastSize again. An operator's GOGC or GOMEMLIMIT is left alone. (Taken
// again after a busy spell, the slice may land on memory the runtime reuses and
// zeroes: then up to gcBallastSize of it is resident, though never touched again.)
type gcHeadroom struct {
	ballast []byte // never read or written: its pages are never touched
}

// adjust takes or drops the ballast for live, the live heap of the last collection
// (the ballast included).
func (h *gcHeadroom) adjust(live uint64) {
	own := uint64(len(h.ballast))
	switch {
	case h.ballast == nil && live < gcBallastSize:
		h.ballast = make([]byte, gcBallastSize)
	case h.ballast != nil && live-min(live, own) > 4*gcBallastSize:
		h.ballast = nil
	}
}

// keepGCHeadroom runs gcHeadroom until ctx ends, checking the live heap on every tick.
func keepGCHeadroom(ctx context.Context, getenv func(string) string, tick <-chan time.Time, live func() uint64) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return
	}
	var h gcHeadroom
	h.adjust(live())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		h.adjust(live())
	}
}

// liveHeap is the live heap the last collection found.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// quietAfter is how long the front must accept nothing before it gives a burst's
// memory back.
const quietAfter = 5 * time.Second

// returnIdleMemory gives the memory of a burst of connections back to the system once
// the front has been quiet for a while. Each handshake leaves some 40 KB of garbage;
// a front that then holds thousands of idle sessions allocates almost nothing, so the
// Go runtime neither collects that garbage nor returns its pages for minutes, and the
// process's resident memory (what an operator sees, and docs/performance.md measures
// per idle session) stays at the burst's peak. Once no connection has been accepted
// for a whole period after some were, free (debug.FreeOSMemory: a collection, then
// every free page back to the system) runs once. Under steady load it never runs.
// tick paces the checks (a ticker of quietAfter).
func returnIdleMemory(ctx context.Context, accepted func() uint64, tick <-chan time.Time, free func()) {
	var q quietness
	q.last, q.freedAt = accepted(), accepted()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if q.check(accepted()) {
			free()
		}
	}
}

// quietness is what returnIdleMemory remembers between checks.
type quietness struct {
	last    uint64 // connections accepted at the last check
	freedAt uint64 // connections accepted when memory was last given back
}

// check takes the count of accepted connections at one period's end and reports
// whether to give memory back now: none came in this period, some since the last time.
func (q *quietness) check(n uint64) bool {
	free := n == q.last && n != q.freedAt
	if free {
		q.freedAt = n
	}
	q.last = n
	return free
}
