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
// million, a fifth of a rebuild). It is taken only when the lengths are equal: a CRL
// that adds or drops a revocation (a different length) is rebuilt without it, so a
// fresh load costs what it did. The price of that is one rebuild more: the first
// re-signing after a change finds no digest to compare with (it takes one for the next).

// entriesID identifies the revokedCertificates contents a snapshot's index was built
// from.
type entriesID struct {
	size   int // bytes of revokedCertificates contents (0 when absent)
	sum    [sha256.Size]byte
	summed bool // sum was taken (see above: only when a comparison asked for it)
}

// indexEntries sets s's index from revoked, the contents of revokedCertificates:
// prev's index when prev was built from the same bytes, else a new one.
func (s *Snapshot) indexEntries(revoked cryptobyte.String, prev *Snapshot) error {
	s.entries = entriesID{size: len(revoked)}
	if prev != nil && len(revoked) > 0 && prev.entries.size == len(revoked) && prev.Issuer.Equal(s.Issuer) {
		s.entries.sum, s.entries.summed = sha256.Sum256(revoked), true
		if prev.entries.summed && prev.entries.sum == s.entries.sum {
			s.idx, s.reused = prev.idx, true
			return nil
		}
	}
	var err error
	s.idx, err = buildIndex(revoked)
	return err
}
