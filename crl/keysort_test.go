package crl

import (
	"encoding/binary"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSortKeys: the counting sort leaves the keys as a plain sort and dropping the
// duplicates would, and its tables send every key's prefix to the slot that holds it,
// for keys in every order and of every length, clustered ones included (a fixed prefix
// and a counter put many keys in one slot).
func TestSortKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	ofLen := func(l int) serialKey {
		var b [maxKeyBytes]byte
		for i := maxKeyBytes - l; i < maxKeyBytes; i++ {
			b[i] = byte(rng.Uint32())
		}
		if l > 0 {
			b[maxKeyBytes-l] |= 1 // exactly l bytes
		}
		return keyOf(&b)
	}
	random := func(n, l int) []serialKey {
		keys := make([]serialKey, n)
		for i := range keys {
			keys[i] = ofLen(l)
		}
		return keys
	}
	sorted := func(keys []serialKey) []serialKey {
		slices.SortFunc(keys, compareKeys)
		return keys
	}
	counter := func(n int, base serialKey) []serialKey {
		keys := make([]serialKey, n)
		for i := range keys {
			keys[i] = base
			keys[i].lo += uint64(i)
		}
		rng.Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		return keys
	}
	for _, tc := range []struct {
		name string
		keys []serialKey
	}{
		{"empty", nil},
		{"one", random(1, 16)},
		{"zero", []serialKey{{}, {}, {}}},
		{"random", random(50_000, 16)},
		{"sorted", sorted(random(50_000, 16))},
		{"reversed", func() []serialKey { k := sorted(random(50_000, 16)); slices.Reverse(k); return k }()},
		{"duplicates", func() []serialKey {
			k := random(10_000, 16)
			k = append(append(k, k...), k[:5000]...)
			rng.Shuffle(len(k), func(i, j int) { k[i], k[j] = k[j], k[i] })
			return k
		}()},
		{"sorted_duplicates", func() []serialKey { k := random(1000, 3); return sorted(append(k, k...)) }()},
		{"mixed_lengths", func() []serialKey {
			var k []serialKey
			for l := 0; l <= maxKeyBytes; l++ {
				k = append(k, random(1+rng.IntN(3000), l)...)
			}
			rng.Shuffle(len(k), func(i, j int) { k[i], k[j] = k[j], k[i] })
			return k
		}()},
		{"clustered", counter(20_000, serialKey{hi: 0x8000_0000_0000_0000})},
		{"clustered_20_bytes", counter(5000, serialKey{top: 0xffff_ffff, hi: 1 << 63})},
		{"small_counter", counter(70_000, serialKey{lo: 1})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := slices.Compact(sorted(slices.Clone(tc.keys)))
			var x index
			x.sortKeys(slices.Clone(tc.keys), nil)
			if !slices.Equal(x.keys, want) {
				t.Fatalf("%d keys sorted to %d, not the %d of a plain sort", len(tc.keys), len(x.keys), len(want))
			}
			covered := 0
			for l := range x.byLen {
				tb := &x.byLen[l]
				for p := range len(tb.slots) - 1 {
					for _, k := range x.keys[tb.slots[p]:tb.slots[p+1]] {
						if k.byteLen() != l || k.prefix(l, tb.bits) != uint32(p) {
							t.Fatalf("key %x of %d bytes in slot %d of length %d", keyBytes(k), k.byteLen(), p, l)
						}
						covered++
					}
				}
			}
			if covered != len(x.keys) {
				t.Fatalf("the tables cover %d of %d keys", covered, len(x.keys))
			}
			for _, k := range want {
				b := keyBytes(k)
				if !x.has(new(big.Int).SetBytes(b[:])) {
					t.Fatalf("key %x not found", b)
				}
			}
		})
	}
}

// TestPrefix: a key's prefix is its magnitude's leading bits, as big.Int shifts them.
func TestPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		var b [maxKeyBytes]byte
		l := rng.IntN(maxKeyBytes + 1)
		for i := maxKeyBytes - l; i < maxKeyBytes; i++ {
			b[i] = byte(rng.Uint32())
		}
		k := keyOf(&b)
		n := new(big.Int).SetBytes(b[:])
		l = (n.BitLen() + 7) / 8
		if k.byteLen() != l {
			t.Fatalf("%x: byteLen %d, want %d", b, k.byteLen(), l)
		}
		bits := uint(rng.IntN(min(8*l, 24) + 1))
		want := new(big.Int).Rsh(n, uint(8*l)-bits).Uint64()
		if got := k.prefix(l, bits); uint64(got) != want {
			t.Fatalf("%x: prefix(%d, %d) = %x, want %x", b, l, bits, got, want)
		}
	}
}

// TestSortKeysOdd: serials the keys cannot hold (negative, or over 20 bytes) stay out of
// the sort and in the map, duplicates counted once, among keys of every length.
func TestSortKeysOdd(t *testing.T) {
	var serials []*big.Int
	for i := range 3000 {
		n := new(big.Int).Lsh(big.NewInt(int64(i+1)), uint(i%170))
		if i%7 == 0 {
			n.Neg(n) // negative
		}
		serials = append(serials, n)
		if i%11 == 0 {
			serials = append(serials, new(big.Int).Set(n)) // a duplicate
		}
	}
	x := indexOf(t, serials)
	distinct, odd := map[string]bool{}, map[string]bool{}
	for _, n := range serials {
		distinct[n.String()] = true
		if n.Sign() < 0 || n.BitLen() > 8*maxKeyBytes {
			odd[n.String()] = true
		}
	}
	if x.len() != len(distinct) || len(x.odd) != len(odd) || len(odd) == 0 {
		t.Fatalf("%d serials, %d in the map; want %d and %d", x.len(), len(x.odd), len(distinct), len(odd))
	}
	for _, n := range serials {
		if !x.has(n) || x.has(new(big.Int).Add(n, big.NewInt(1))) != distinct[new(big.Int).Add(n, big.NewInt(1)).String()] {
			t.Fatalf("serial %s answered wrong", n)
		}
	}
}

func keyBytes(k serialKey) (b [maxKeyBytes]byte) {
	binary.BigEndian.PutUint32(b[0:4], k.top)
	binary.BigEndian.PutUint64(b[4:12], k.hi)
	binary.BigEndian.PutUint64(b[12:20], k.lo)
	return b
}

// BenchmarkSortKeys sorts a million random 16-byte keys, the CA's serials, as a reload
// of a million-entry CRL does (BenchmarkReload times the whole reload).
func BenchmarkSortKeys(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 9))
	keys := make([]serialKey, 1_000_000)
	for i := range keys {
		keys[i] = serialKey{hi: rng.Uint64() | 1<<63, lo: rng.Uint64()}
	}
	work := make([]serialKey, len(keys))
	b.ReportAllocs()
	for b.Loop() {
		copy(work, keys)
		var x index
		x.sortKeys(work, nil)
		if len(x.keys) != len(keys) {
			b.Fatalf("%d keys sorted, want %d", len(x.keys), len(keys))
		}
	}
}
