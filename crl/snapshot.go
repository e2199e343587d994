package crl

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Snapshot is one verified CRL. It is immutable once built: a newer CRL makes a new
// Snapshot, so readers may keep and use one without locking.
type Snapshot struct {
	// Issuer is the certificate whose key signed the CRL.
	Issuer *x509.Certificate
	// Number is the CRL number extension (nil when the CRL has none).
	Number *big.Int
	// ThisUpdate and NextUpdate are the CRL's own validity bounds.
	ThisUpdate, NextUpdate time.Time
	// ETag is the HTTP entity tag (or a content hash for files) the CRL came with.
	ETag string
	// LoadedAt is when this snapshot was verified and installed.
	LoadedAt time.Time

	idx     index
	entries entriesID // what idx was built from (see reuse.go)
	reused  bool      // idx is the previous snapshot's: the same entries, re-signed
	// loadTime is how long the poll that brought it took, the read included, and paced
	// how much of that the pacer slept (see pace.go); for the "crl loaded" log line.
	loadTime, paced time.Duration
}

// ErrStale is wrapped by errors about a CRL that is too old to rely on.
var ErrStale = errors.New("crl: stale")

// Revoked reports whether serial is listed. A nil snapshot lists nothing. It neither
// allocates nor locks for any serial of up to 20 bytes (all that RFC 5280 allows).
func (s *Snapshot) Revoked(serial *big.Int) bool {
	if s == nil || serial == nil {
		return false
	}
	return s.idx.has(serial)
}

// Len is the number of revoked serials.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return s.idx.len()
}

// Stale returns an error wrapping ErrStale when now is past NextUpdate plus grace.
func (s *Snapshot) Stale(now time.Time, grace time.Duration) error {
	if s == nil {
		return fmt.Errorf("%w: no CRL loaded yet", ErrStale)
	}
	if now.After(s.NextUpdate.Add(grace)) {
		return fmt.Errorf("%w: CRL from %q expired at %s (grace %s): check that the CA is up and re-signs its CRL", ErrStale, s.Issuer.Subject.CommonName, s.NextUpdate.UTC().Format(time.RFC3339), grace)
	}
	return nil
}

// NumberString is the CRL number in hex, or "" without one; for logs.
func (s *Snapshot) NumberString() string {
	if s == nil || s.Number == nil {
		return ""
	}
	return hex.EncodeToString(s.Number.Bytes())
}
