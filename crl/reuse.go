package crl

import (
	"crypto/sha256"

	"golang.org/x/crypto/cryptobyte"
)

// A CA re-signs its CRL on a schedule (new thisUpdate, nextUpdate, CRL number and
// signature) far more often than its list of revocations changes: a re-signed CRL of a
// million entries carries the same 35 MB of revokedCertificates, and reading and
// sorting them again was three quarters of its reload. So a snapshot remembers which
// entries it was built from, and the next CRL of the same Store whose entries are the
// same bytes shares its index. The index is a function of those bytes alone (an entry's
// checks, in buildIndex, look at nothing outside the entry), so sharing it is what
// rebuilding would give; every check of the CRL around the entries — issuer,
// signature, dates, extensions, and the Store's CRL number and state file — runs as
// for any CRL, before the index is looked at.
//
// The bytes are told apart by their length and their SHA-256: 35 MB are not kept for a
// comparison, and a 64-bit hash (maphash) of content the CA chooses would not be an
// exact one. The signature's own SHA-256 covers the whole TBSCertList, whose dates and
// number change with every re-signing, and nothing about the entries alone can be
// derived from it, so this is a second hash, over the entries only (about 20 ms for a
// million, a sixth of a rebuild). Every index built is hashed so, not only one whose
// length matches the current one: the CA re-signs after every revocation on its
// schedule (docs/ca.md, crl.renew_period), and a digest taken only when asked for
// would leave the first re-signing after each revocation without one to compare with,
// a whole rebuild to save 20 ms.

// entriesID identifies the revokedCertificates contents a snapshot's index was built
// from.
type entriesID struct {
	size int // bytes of revokedCertificates contents (0 when absent)
	sum  [sha256.Size]byte
}

// indexEntries sets s's index from revoked, the contents of revokedCertificates:
// prev's index when prev was built from the same bytes, else a new one.
func (s *Snapshot) indexEntries(revoked cryptobyte.String, prev *Snapshot, p *pacer) error {
	p = p.forSize(len(revoked))
	s.entries = entriesID{size: len(revoked)}
	if len(revoked) > 0 {
		s.entries.sum = entriesSum(revoked, p)
	}
	if prev != nil && len(revoked) > 0 && prev.entries == s.entries && prev.Issuer.Equal(s.Issuer) {
		s.idx, s.reused = prev.idx, true
		return nil
	}
	var err error
	s.idx, err = buildIndex(revoked, p)
	return err
}

// entriesSum is the SHA-256 of revoked, hashed a piece at a time when p paces.
func entriesSum(revoked []byte, p *pacer) (sum [sha256.Size]byte) {
	if p == nil {
		return sha256.Sum256(revoked)
	}
	h := sha256.New()
	for len(revoked) > 0 {
		n := min(len(revoked), paceBytes)
		h.Write(revoked[:n])
		revoked = revoked[n:]
		p.pause()
	}
	h.Sum(sum[:0])
	return sum
}
