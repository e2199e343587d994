package mtls

import (
	"testing"
	"time"
)

// TestProvedAtExtra: the proof time written into a ticket's extra data reads back the
// same, next to other extra data or alone, and costs one allocation per ticket.
func TestProvedAtExtra(t *testing.T) {
	if n := len(provedAtExtra{}.b); n != len(provedAtLabel)+8 {
		t.Fatalf("entry of %d bytes, want the label and 8", n)
	}
	at := time.Unix(1796000000, 0)
	for _, tc := range []struct {
		name  string
		extra [][]byte
	}{
		{"alone", nil},
		{"after other data", [][]byte{[]byte("other:xyz")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ticketProvedAt(appendProvedAt(tc.extra, at))
			if !ok || !got.Equal(at) {
				t.Fatalf("read back %v, %v; want %v", got, ok, at)
			}
		})
	}
	if a := testing.AllocsPerRun(100, func() { appendProvedAt(nil, at) }); a != 1 {
		t.Errorf("%v allocations per ticket, want 1", a)
	}
	if _, ok := ticketProvedAt([][]byte{[]byte("imapgate-proved-at:1234567")}); ok {
		t.Error("a short entry was read as a proof time")
	}
}
