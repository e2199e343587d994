package mtls

import "testing"

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
