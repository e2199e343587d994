package crl

import (
	"math/bits"
	"slices"
)

// sortKeys sorts keys (in CRL order: the CA's database order, not serial order), drops
// duplicates and builds the prefix tables, with a counting sort by the tables' own
// slots: a pass counts the keys of each length, one the keys of each slot, one moves
// every key to its slot's place, and one sorts each slot's few keys and drops the
// duplicates. A comparison sort of a million keys made twenty comparisons a key and was
// 40 % of a reload's CPU; this makes four passes, one of them a scatter. Keys already in
// order (a CA that lists serials in order) are moved onto themselves, without a second
// slice.
func (x *index) sortKeys(keys []serialKey) {
	var perLen [maxKeyBytes + 1]int
	for _, k := range keys {
		perLen[k.byteLen()]++
	}
	for l, n := range perLen {
		if n == 0 {
			continue
		}
		t := &x.byLen[l]
		// About one key a slot, and no more bits than the magnitude has.
		for t.bits = 0; 1<<t.bits < n && t.bits < 24 && t.bits < uint(8*l); t.bits++ {
		}
		t.slots = make([]uint32, 1<<t.bits+1)
	}
	for _, k := range keys {
		*x.slot(k)++
	}
	// Counts to starts: the keys of length l and slot p begin where those of the shorter
	// lengths and of the lower slots end.
	at := uint32(0)
	for l := range x.byLen {
		t := &x.byLen[l]
		for p, n := range t.slots {
			t.slots[p] = at
			at += n
		}
	}
	sorted := keys
	if !slices.IsSortedFunc(keys, compareKeys) {
		sorted = make([]serialKey, len(keys))
	}
	for _, k := range keys {
		s := x.slot(k)
		sorted[*s] = k
		*s++
	}
	// Each slot now holds its keys, and its table entry says where they end. Sort them,
	// drop duplicates (equal keys share a slot) and set the entry to where they begin
	// once the duplicates before them are gone.
	w, start := 0, 0
	for l := range x.byLen {
		t := &x.byLen[l]
		if t.slots == nil {
			continue
		}
		last := len(t.slots) - 1
		for p := range last {
			end := int(t.slots[p])
			run := sorted[start:end]
			sortRun(run)
			t.slots[p] = uint32(w)
			for _, k := range run {
				if w == 0 || sorted[w-1] != k {
					sorted[w] = k
					w++
				}
			}
			start = end
		}
		t.slots[last] = uint32(w)
	}
	x.keys = slices.Clip(sorted[:w])
}

// slot is the table entry of k's slot.
func (x *index) slot(k serialKey) *uint32 {
	l := k.byteLen()
	t := &x.byLen[l]
	return &t.slots[k.prefix(l, t.bits)]
}

// sortRun sorts one slot's keys: about one, so by insertion, unless the CA's serials
// cluster (a fixed prefix and a counter) and fill a few slots.
func sortRun(run []serialKey) {
	if len(run) > 12 {
		slices.SortFunc(run, compareKeys)
		return
	}
	for i := 1; i < len(run); i++ {
		for j := i; j > 0 && run[j].less(run[j-1]); j-- {
			run[j], run[j-1] = run[j-1], run[j]
		}
	}
}

func (k serialKey) less(o serialKey) bool {
	if k.top != o.top {
		return k.top < o.top
	}
	if k.hi != o.hi {
		return k.hi < o.hi
	}
	return k.lo < o.lo
}

// byteLen is the number of bytes of k's magnitude.
func (k serialKey) byteLen() int {
	switch {
	case k.top != 0:
		return 16 + (bits.Len32(k.top)+7)/8
	case k.hi != 0:
		return 8 + (bits.Len64(k.hi)+7)/8
	}
	return (bits.Len64(k.lo) + 7) / 8
}

// prefix is the first n bits (at most 32) of k's l-byte magnitude: k shifted right by
// the other 8l-n bits, which leaves nothing above those n.
func (k serialKey) prefix(l int, n uint) uint32 {
	s := uint(8*l) - n
	switch {
	case s < 64: // a shift by 64 or more is zero in Go
		return uint32(k.lo>>s | k.hi<<(64-s))
	case s < 128:
		return uint32(k.hi>>(s-64) | uint64(k.top)<<(128-s))
	}
	return uint32(uint64(k.top) >> (s - 128))
}
