package crl

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
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

	revoked map[string]struct{} // key: serial magnitude bytes, see serialKey
}

// ErrStale is wrapped by errors about a CRL that is too old to rely on.
var ErrStale = errors.New("crl: stale")

// Parse verifies a CRL (DER or PEM) against issuer and returns a snapshot. It checks the
// signature, that the CRL names issuer as its issuer, that thisUpdate is not in the
// future (with a minute of clock skew) and that nextUpdate is present.
func Parse(data []byte, issuer *x509.Certificate, now time.Time) (*Snapshot, error) {
	if issuer == nil {
		return nil, errors.New("crl: parse: no issuer certificate configured")
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("crl: parse: PEM block is %q, want \"X509 CRL\"", block.Type)
		}
		der = block.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("crl: parse: %w", err)
	}
	if !bytes.Equal(rl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("crl: CRL issuer %q is not the configured issuer %q: check the issuer certificate and the CRL URL", rl.Issuer, issuer.Subject)
	}
	if len(rl.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(rl.AuthorityKeyId, issuer.SubjectKeyId) {
		return nil, fmt.Errorf("crl: CRL authority key id %x does not match issuer %q key id %x", rl.AuthorityKeyId, issuer.Subject, issuer.SubjectKeyId)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("crl: signature of CRL from %q does not verify: %w", issuer.Subject, err)
	}
	if rl.NextUpdate.IsZero() {
		return nil, fmt.Errorf("crl: CRL from %q has no nextUpdate; refusing a CRL that never expires", issuer.Subject)
	}
	if rl.ThisUpdate.After(now.Add(time.Minute)) {
		return nil, fmt.Errorf("crl: CRL from %q has thisUpdate %s in the future: check the clocks", issuer.Subject, rl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	s := &Snapshot{
		Issuer:     issuer,
		Number:     rl.Number,
		ThisUpdate: rl.ThisUpdate,
		NextUpdate: rl.NextUpdate,
		LoadedAt:   now,
		revoked:    make(map[string]struct{}, len(rl.RevokedCertificateEntries)),
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber == nil {
			continue
		}
		s.revoked[serialKey(e.SerialNumber)] = struct{}{}
	}
	return s, nil
}

// serialKey maps a serial to a map key. Serials are positive; a negative one (invalid but
// seen in the wild) gets a distinct prefix so it never collides with its absolute value.
func serialKey(n *big.Int) string {
	if n.Sign() < 0 {
		return "-" + string(n.Bytes())
	}
	return string(n.Bytes())
}

// Revoked reports whether serial is listed. A nil snapshot lists nothing.
func (s *Snapshot) Revoked(serial *big.Int) bool {
	if s == nil || serial == nil {
		return false
	}
	_, ok := s.revoked[serialKey(serial)]
	return ok
}

// Len is the number of revoked serials.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.revoked)
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
