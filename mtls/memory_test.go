package mtls

import (
	"context"
	"runtime"
	"testing"
)

// TestReturnIdleMemory: memory is given back once per burst, after a quiet period,
// never while connections keep coming, and not when nothing happened at all.
func TestReturnIdleMemory(t *testing.T) {
	var q quietness
	n := uint64(0)
	for _, step := range []struct {
		name  string
		conns uint64 // accepted during the period
		free  bool
	}{
		{"nothing happened", 0, false},
		{"connections", 5, false},
		{"more connections", 1, false},
		{"quiet after them", 0, true},
		{"still quiet", 0, false},
		{"the next burst", 3, false},
		{"quiet again", 0, true},
	} {
		n += step.conns
		if got := q.check(n); got != step.free {
			t.Fatalf("%s: free %v, want %v", step.name, got, step.free)
		}
	}
}

// TestGCHeadroom: the ballast is there while the live heap is small, goes once the
// live heap (without it) is past four times its size, and comes back only below its
// size; an operator's GOGC or GOMEMLIMIT turns it off.
func TestGCHeadroom(t *testing.T) {
	const b = gcBallastSize
	for _, tc := range []struct {
		name      string
		had       bool
		live      uint64
		wantAfter bool
	}{
		{"small heap takes it", false, 1 << 20, true},
		{"small heap keeps it", true, b + 1<<20, true},
		{"at four times keeps it", true, b + 4*b, true},
		{"large heap drops it", true, b + 4*b + 1, false},
		{"middle heap does not take it back", false, 2 * b, false},
		{"below its size takes it back", false, b - 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h gcHeadroom
			if tc.had {
				h.ballast = make([]byte, b)
			}
			h.adjust(tc.live)
			if got := h.ballast != nil; got != tc.wantAfter {
				t.Fatalf("ballast %v after live %d, want %v", got, tc.live, tc.wantAfter)
			}
			if h.ballast != nil && len(h.ballast) != b {
				t.Fatalf("ballast of %d bytes, want %d", len(h.ballast), b)
			}
		})
	}
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env+" set", func(t *testing.T) {
			calls := 0
			keepGCHeadroom(context.Background(), func(k string) string {
				if k == env {
					return "200"
				}
				return ""
			}, nil, func() uint64 { calls++; return 0 })
			if calls != 0 {
				t.Fatalf("the live heap was read %d times with %s set", calls, env)
			}
		})
	}
	runtime.GC()
	if liveHeap() == 0 {
		t.Error("liveHeap read 0 from runtime/metrics")
	}
}
