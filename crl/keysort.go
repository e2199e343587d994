package crl

import (
	"math/bits"
	"slices"
)

// sortKeys sorts keys (in CRL order: the CA's database order, not serial order), drops
// duplicates and builds the prefix tables, with a counting sort by the tables' own
// slots. A comparison sort of a million keys made twenty comparisons a key and was 40 %
// of a reload's CPU; this reads the keys five times and moves them twice:
//
//   - it counts the keys of each length, which sets each length's table size;
//   - it counts the keys of each slot, and sums the counts into where each slot begins
//     in sorted order (all tables are one slice, in the order of the sorted keys);
//   - it moves each key to a second slice, grouped by the first bits of its slot
//     number (at most 256 groups, whose ends the first-level cache keeps; 1024 or
//     4096 were slower);
//   - group by group, it moves each key back to its slot's place: one group's slots
//     span a 256th of the keys, so these writes stay in the cache too, where moving
//     every key straight to its slot wrote all over 24 MB for a million keys, a cache
//     miss a key (about twice the CPU of these two moves);
//   - it sorts each slot's few keys and drops the duplicates (equal keys share a slot).
//
// Keys already in order (a CA that lists serials in order) skip the second slice and
// are moved onto themselves.
func (x *index) sortKeys(keys []serialKey, p *pacer) {
	var perLen [maxKeyBytes + 1]int
	for i, k := range keys {
		perLen[k.byteLen()]++
		p.step(i)
	}
	// Each length's table, one past the end of its last slot included, at its offset in
	// all: after the sums below that last entry is where the next length begins.
	var offset [maxKeyBytes + 1]int
	size := 0
	for l, n := range perLen {
		if n == 0 {
			continue
		}
		t := &x.byLen[l]
		// About one key a slot, and no more bits than the magnitude has.
		for t.bits = 0; 1<<t.bits < n && t.bits < 24 && t.bits < uint(8*l); t.bits++ {
		}
		offset[l] = size
		size += 1<<t.bits + 1
	}
	all := make([]uint32, size)
	for l := range perLen {
		if t := &x.byLen[l]; perLen[l] > 0 {
			t.slots = all[offset[l] : offset[l]+1<<t.bits+1 : offset[l]+1<<t.bits+1]
		}
	}
	slotOf := func(k serialKey) int {
		l := k.byteLen()
		return offset[l] + int(k.prefix(l, x.byLen[l].bits))
	}
	for i, k := range keys {
		all[slotOf(k)]++
		p.step(i)
	}
	at := uint32(0)
	for g, n := range all {
		all[g] = at
		at += n
	}
	src := keys
	if !slices.IsSortedFunc(keys, compareKeys) {
		shift := uint(max(bits.Len(uint(size))-8, 0))
		group := make([]uint32, (size-1)>>shift+1)
		for c := range group {
			group[c] = all[c<<shift]
		}
		src = make([]serialKey, len(keys))
		for i, k := range keys {
			c := slotOf(k) >> shift
			src[group[c]] = k
			group[c]++
			p.step(i)
		}
	}
	// Onto keys, which src has taken (or is: in order, each key lands where it is).
	for i, k := range src {
		g := slotOf(k)
		keys[all[g]] = k
		all[g]++
		p.step(i)
	}
	// Each slot now holds its keys, and its entry says where they end. Sort them, drop
	// duplicates and set the entry to where they begin once the duplicates before them
	// are gone.
	w, start := 0, 0
	for g, end := range all {
		all[g] = uint32(w)
		switch run := keys[start:end]; len(run) {
		case 0:
		case 1: // most slots: nothing to sort or drop
			keys[w] = run[0]
			w++
		default:
			sortRun(run)
			first := w
			for _, k := range run {
				if w == first || keys[w-1] != k {
					keys[w] = k
					w++
				}
			}
		}
		start = int(end)
		p.step(g)
	}
	x.keys = slices.Clip(keys[:w])
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
