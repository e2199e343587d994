package crl

import (
	"context"
	"crypto/x509"
	"time"
)

// What the external tests need to see of the package's internals.

// ParseAfter is parse: Parse with prev as the current snapshot whose index may be reused.
func ParseAfter(data []byte, issuer *x509.Certificate, now time.Time, prev *Snapshot) (*Snapshot, error) {
	return parse(data, issuer, now, prev, nil)
}

// IndexReused reports whether s shares the index of the snapshot before it.
func IndexReused(s *Snapshot) bool { return s.reused }

// SameIndex reports whether a and b share one index (the same keys in memory).
func SameIndex(a, b *Snapshot) bool {
	return len(a.idx.keys) > 0 && len(b.idx.keys) > 0 && &a.idx.keys[0] == &b.idx.keys[0]
}

// SetClock makes s read the time of its file polls from now (see filestamp.go).
func SetClock(s *Store, now func() time.Time) { s.clock = now }

// FileReads is how many times s has read its CRL file in full.
func FileReads(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fileReads
}

// Paced is how long the reload that brought s slept to spread its work (see pace.go).
func Paced(s *Snapshot) time.Duration { return s.paced }

// ParsePaced is parse as a Store's reload runs it: paced (see pace.go), after prev.
func ParsePaced(data []byte, issuer *x509.Certificate, now time.Time, prev *Snapshot) (*Snapshot, error) {
	return parse(data, issuer, now, prev, newPacer(context.Background(), time.Now()))
}
