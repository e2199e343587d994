package mtls

import (
	"context"
	"time"
)

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
