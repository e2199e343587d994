package crl

import (
	"context"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// recordingPacer is a pacer whose sleeps are counted, not slept.
func recordingPacer(until time.Time) (*pacer, *[]time.Duration) {
	var sleeps []time.Duration
	p := &pacer{ratio: paceRatio, until: until, since: time.Now()}
	p.sleep = func(d time.Duration) { sleeps = append(sleeps, d) }
	return p, &sleeps
}

// entriesOf is the contents of a revokedCertificates listing serials.
func entriesOf(serials []*big.Int) cryptobyte.String {
	var rc cryptobyte.Builder
	for _, n := range serials {
		rc.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1BigInt(n)
			b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte("260101000000Z")) })
		})
	}
	return rc.BytesOrPanic()
}

// TestPacedIndexSame: pacing a build changes when its work is done, not what it builds:
// the same keys and prefix tables, and a pause about every pacePiece steps of each pass
// (counting, reading, and the sort's five).
func TestPacedIndexSame(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	const n = 5*pacePiece + 123
	var serials []*big.Int
	for range n {
		serials = append(serials, new(big.Int).SetUint64(rng.Uint64()|1<<63))
	}
	revoked := entriesOf(serials)
	want, err := buildIndex(revoked, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, sleeps := recordingPacer(time.Now().Add(time.Hour))
	got, err := buildIndex(revoked, p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.keys, want.keys) {
		t.Fatal("paced build: other keys")
	}
	for l := range got.byLen {
		if !slices.Equal(got.byLen[l].slots, want.byLen[l].slots) || got.byLen[l].bits != want.byLen[l].bits {
			t.Fatalf("paced build: other table for length %d", l)
		}
	}
	if want := 6 * (n / pacePiece); len(*sleeps) < want {
		t.Fatalf("%d pauses, want at least %d", len(*sleeps), want)
	}
	for _, d := range *sleeps {
		if d <= 0 || d > time.Hour {
			t.Fatalf("a sleep of %v", d)
		}
	}
}

// TestPacerLimits: no sleep past the pacer's end; no pacing of a small CRL's entries;
// a stopped front's reload sleeps no more; a nil pacer does nothing.
func TestPacerLimits(t *testing.T) {
	p, sleeps := recordingPacer(time.Now().Add(-time.Millisecond))
	for i := range 10 * pacePiece {
		p.step(i)
	}
	if len(*sleeps) != 0 {
		t.Fatalf("%d sleeps past the end", len(*sleeps))
	}

	p, sleeps = recordingPacer(time.Now().Add(time.Hour))
	small := entriesOf([]*big.Int{big.NewInt(1), big.NewInt(2)})
	var s Snapshot
	if err := s.indexEntries(small, nil, p); err != nil || s.idx.len() != 2 {
		t.Fatalf("small CRL: %v, %d entries", err, s.idx.len())
	}
	if len(*sleeps) != 0 {
		t.Fatalf("entries of %d bytes paced (%d sleeps)", len(small), len(*sleeps))
	}
	if p.forSize(paceMinBytes) != p || p.forSize(paceMinBytes-1) != nil {
		t.Fatal("forSize: wrong threshold")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p = newPacer(ctx, time.Now())
	p.since = time.Now().Add(-time.Second) // a long piece: a sleep of 7 s is due
	begin := time.Now()
	p.pause()
	p.since = time.Now().Add(-time.Second)
	p.pause()
	if waited := time.Since(begin); waited > time.Second {
		t.Fatalf("a stopped reload slept %v", waited)
	}
	if !p.until.IsZero() || p.sleptFor() > time.Second {
		t.Fatalf("a stopped reload still paces (slept %v)", p.sleptFor())
	}

	var none *pacer
	none.pause()
	none.step(pacePiece - 1)
	if none.sleptFor() != 0 || none.forSize(paceMinBytes) != nil {
		t.Fatal("nil pacer")
	}
}
