package crl

import (
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestIndex: the index answers as a map of every listed serial would, for serials of
// every length from zero to past RFC 5280's 20 bytes, negative ones, duplicates, and
// serials next to listed ones.
func TestIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var listed []*big.Int
	for l := 0; l <= 24; l++ {
		for range 1 + rng.IntN(300) {
			b := make([]byte, l)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			if l > 0 && b[0] == 0 {
				b[0] = 1
			}
			n := new(big.Int).SetBytes(b)
			if rng.IntN(20) == 0 {
				n.Neg(n)
			}
			listed = append(listed, n)
			if rng.IntN(10) == 0 {
				listed = append(listed, new(big.Int).Set(n)) // a duplicate
			}
		}
	}
	x := indexOf(t, listed)
	want := map[string]bool{}
	for _, n := range listed {
		want[n.String()] = true
	}
	if x.len() != len(want) {
		t.Fatalf("len %d, want %d distinct serials", x.len(), len(want))
	}
	for _, n := range listed {
		for _, d := range []int64{-1, 0, 1} {
			probe := new(big.Int).Add(n, big.NewInt(d))
			if got := x.has(probe); got != want[probe.String()] {
				t.Fatalf("has(%s) = %v, want %v", probe, got, !got)
			}
		}
	}
	var empty index
	if empty.has(big.NewInt(1)) || empty.has(new(big.Int)) {
		t.Fatal("an empty index lists a serial")
	}
}

// TestFastUTCTime: the digit-by-digit check of an entry's revocationDate says yes only
// to what cryptobyte (and so x509) parses.
func TestFastUTCTime(t *testing.T) {
	for _, s := range []string{
		"260101000000Z", "000229235959Z", "010229000000Z", "991231235959Z", "500101000000Z",
		"681231000000Z", "690101000000Z", "261301000000Z", "260100000000Z", "260132000000Z",
		"260431000000Z", "260101240000Z", "260101006000Z", "260101000060Z", "2601010000Z",
		"260101000000+0000", "26010100000aZ", "260101000000z", "000000000000Z", "960229000000Z",
		"970229000000Z",
	} {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
		el := b.BytesOrPanic()
		if fastUTCTime(el) && !parseTime(el, new(time.Time)) {
			t.Errorf("%s: the fast check accepts what x509 refuses", s)
		}
		if !fastUTCTime(el) && len(s) == 13 && s[12] == 'Z' && parseTime(el, new(time.Time)) {
			t.Errorf("%s: the fast check sends a plain valid UTCTime the slow way", s)
		}
	}
}

// TestRevokedAllocationFree: the lookup each handshake makes allocates nothing.
func TestRevokedAllocationFree(t *testing.T) {
	var listed []*big.Int
	for i := range 1000 {
		listed = append(listed, new(big.Int).Lsh(big.NewInt(int64(i+1)), 100))
	}
	x := indexOf(t, listed)
	s := &Snapshot{idx: x}
	hit, miss := new(big.Int).Lsh(big.NewInt(500), 100), new(big.Int).Lsh(big.NewInt(5000), 100)
	max20 := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 160), big.NewInt(1))
	if a := testing.AllocsPerRun(1000, func() {
		if !s.Revoked(hit) || s.Revoked(miss) || s.Revoked(max20) {
			t.Fatal("wrong answer")
		}
	}); a != 0 {
		t.Fatalf("Revoked allocates %.1f times a lookup", a)
	}
}

// indexOf indexes the entries of a CRL listing serials, as Parse would.
func indexOf(t *testing.T, serials []*big.Int) index {
	t.Helper()
	x, err := buildIndex(entriesOf(serials), nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestReasonCodeFastPath: an entry whose extensions are a lone reasonCode skips the
// extension walk; every other shape still takes it, and the two agree on what is valid.
func TestReasonCodeFastPath(t *testing.T) {
	reason := func(critical bool, enum []byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier([]int{2, 5, 29, 21})
			if critical {
				b.AddASN1Boolean(true)
			}
			b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.ENUM, func(b *cryptobyte.Builder) { b.AddBytes(enum) })
			})
		})
		return b.BytesOrPanic()
	}
	other := func() []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier([]int{1, 3, 6, 1, 4, 1, 99999, 1})
			b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {})
		})
		return b.BytesOrPanic()
	}
	for _, tc := range []struct {
		name     string
		exts     []byte
		fast, ok bool
	}{
		{"keyCompromise", reason(false, []byte{1}), true, true},
		{"any byte", reason(false, []byte{0xff}), true, true},
		{"critical", reason(true, []byte{1}), false, true},
		{"two-byte enum", reason(false, []byte{0x01, 0x00}), false, true},
		{"non-minimal enum", reason(false, []byte{0x00, 0x01}), false, false},
		{"empty enum", reason(false, nil), false, false},
		{"reason and another", append(reason(false, []byte{1}), other()...), false, true},
		{"another first", append(other(), reason(false, []byte{1})...), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := onlyReasonCode(tc.exts); got != tc.fast {
				t.Fatalf("fast path %v, want %v", got, tc.fast)
			}
			walked := walkExtensions(tc.exts, func(id []byte, critical bool, value cryptobyte.String) error {
				return checkEntryExtension(id, critical, value, func() string { return "42" })
			})
			if tc.fast && walked != nil {
				t.Fatalf("the fast path takes what the walk refuses: %v", walked)
			}
			var rc cryptobyte.Builder
			rc.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Uint64(42)
				b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte("260101000000Z")) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(tc.exts) })
			})
			x, err := buildIndex(cryptobyte.String(rc.BytesOrPanic()), nil)
			if (err == nil) != tc.ok {
				t.Fatalf("buildIndex: %v, want ok %v", err, tc.ok)
			}
			if err == nil && (x.len() != 1 || !x.has(big.NewInt(42))) {
				t.Fatal("serial 42 not indexed")
			}
		})
	}
}
