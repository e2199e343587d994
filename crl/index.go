package crl

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// index is the set of serials a CRL lists, built for a lookup per handshake that
// neither allocates nor locks, and for a build that keeps up with a CRL of a million
// entries. The serials are a sorted slice of fixed-size keys (24 bytes a serial, one
// allocation), and for each serial length a table says where the keys of each leading-
// bits prefix begin, about one key a prefix: a lookup reads one table slot and one or two
// keys, two cache misses, where bisecting a million keys takes twenty. The tables are
// also how the keys are sorted: a counting sort by prefix (see keysort.go).
//
// RFC 5280 limits serials to 20 octets, so every conforming serial has a key; the rest
// (negative, or longer) go to a map that a conforming CA never fills.
type index struct {
	keys []serialKey
	// byLen[l] covers the serials of l bytes (l = 0 is serial zero): keys[slots[p]:
	// slots[p+1]] are those whose magnitude's leading bits are p. Keys of one length
	// are contiguous in sorted order, as a longer serial is a larger one.
	byLen [maxKeyBytes + 1]struct {
		slots []uint32
		bits  uint
	}
	odd map[string]struct{} // key: big.Int.String()
}

// serialKey is a serial's magnitude of up to 20 bytes, big-endian and left-padded with
// zeros, in three words, so that comparing keys compares serials.
type serialKey struct {
	top    uint32
	hi, lo uint64
}

const maxKeyBytes = 20

func keyOf(b *[maxKeyBytes]byte) serialKey {
	return serialKey{
		top: binary.BigEndian.Uint32(b[0:4]),
		hi:  binary.BigEndian.Uint64(b[4:12]),
		lo:  binary.BigEndian.Uint64(b[12:20]),
	}
}

func compareKeys(a, b serialKey) int {
	if c := cmp.Compare(a.top, b.top); c != 0 {
		return c
	}
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// has reports whether serial is in the index.
func (x *index) has(serial *big.Int) bool {
	if serial.Sign() >= 0 && serial.BitLen() <= 8*maxKeyBytes {
		var b [maxKeyBytes]byte
		serial.FillBytes(b[:])
		l := (serial.BitLen() + 7) / 8
		t := &x.byLen[l]
		if t.slots == nil {
			return false
		}
		k := keyOf(&b)
		p := k.prefix(l, t.bits)
		run := x.keys[t.slots[p]:t.slots[p+1]]
		if len(run) > 8 {
			// Serials that cluster (a fixed prefix and a counter) share a few slots.
			_, found := slices.BinarySearchFunc(run, k, compareKeys)
			return found
		}
		for _, have := range run {
			if c := compareKeys(have, k); c >= 0 {
				return c == 0
			}
		}
		return false
	}
	_, ok := x.odd[serial.String()]
	return ok
}

func (x *index) len() int { return len(x.keys) + len(x.odd) }

// buildIndex reads the contents of revokedCertificates — SEQUENCE OF SEQUENCE {
// userCertificate INTEGER, revocationDate Time, crlEntryExtensions Extensions OPTIONAL }
// — checking each entry as x509.ParseRevocationList would (and the entry extensions with
// checkEntryExtension), and indexes the serials. A non-nil p paces it (see pace.go).
func buildIndex(revoked cryptobyte.String, p *pacer) (index, error) {
	var x index
	n := 0
	for count := revoked; !count.Empty(); n++ {
		if !skipASN1(&count, cbasn1.SEQUENCE) {
			return x, errors.New("malformed revokedCertificates")
		}
		p.step(n)
	}
	keys := make([]serialKey, 0, n)
	for i := 0; !revoked.Empty(); i++ {
		var entry, serial, exts cryptobyte.String
		readASN1(&revoked, &entry, cbasn1.SEQUENCE) // counted above
		if !readASN1(&entry, &serial, cbasn1.INTEGER) || !validInteger(serial) {
			return x, fmt.Errorf("entry %d: malformed serial number", i)
		}
		if !validTime(&entry) {
			return x, fmt.Errorf("entry %s: malformed revocationDate", serialString(serial))
		}
		if !entry.Empty() {
			if !readASN1(&entry, &exts, cbasn1.SEQUENCE) || !entry.Empty() {
				return x, fmt.Errorf("entry %s: malformed extensions or trailing data", serialString(serial))
			}
			if !onlyReasonCode(exts) {
				err := walkExtensions(exts, func(id []byte, critical bool, value cryptobyte.String) error {
					return checkEntryExtension(id, critical, value, func() string { return serialString(serial) })
				})
				if err != nil {
					return x, err
				}
			}
		}
		keys = x.add(keys, serial)
		p.step(i)
	}
	x.sortKeys(keys, p)
	return x, nil
}

// reasonCodeOnly is an entry's extensions when they are a reasonCode alone, not
// critical, as the CA writes every entry: SEQUENCE { OID 2.5.29.21, OCTET STRING {
// ENUMERATED, one byte } }, the byte being any reason. Each entry's extensions were a
// tenth of a million-entry reload read one by one (walkExtensions and its closures); a
// match here is what that walk accepts, and anything else still takes it.
var reasonCodeOnly = []byte{0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01}

func onlyReasonCode(exts []byte) bool {
	return len(exts) == len(reasonCodeOnly)+1 && bytes.Equal(exts[:len(reasonCodeOnly)], reasonCodeOnly)
}

// add appends the key of the contents of a valid INTEGER to keys, or puts it in odd.
func (x *index) add(keys []serialKey, serial []byte) []serialKey {
	mag := serial
	if mag[0]&0x80 == 0 {
		for len(mag) > 0 && mag[0] == 0 {
			mag = mag[1:]
		}
		if len(mag) <= maxKeyBytes {
			var b [maxKeyBytes]byte
			copy(b[maxKeyBytes-len(mag):], mag)
			return append(keys, keyOf(&b))
		}
	}
	if x.odd == nil {
		x.odd = map[string]struct{}{}
	}
	x.odd[serialString(serial)] = struct{}{}
	return keys
}

// validInteger is cryptobyte's check of an INTEGER's contents: present and minimal.
func validInteger(b []byte) bool {
	switch {
	case len(b) == 0:
		return false
	case len(b) == 1:
		return true
	}
	return !(b[0] == 0 && b[1]&0x80 == 0 || b[0] == 0xff && b[1]&0x80 == 0x80)
}

// serialString renders the contents of a valid INTEGER in decimal, as big.Int does.
func serialString(b []byte) string {
	n := new(big.Int).SetBytes(b)
	if b[0]&0x80 != 0 { // two's complement
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return n.String()
}

// validTime reads a Time element and reports whether x509 would parse it. The common
// case, a UTCTime YYMMDDHHMMSSZ, is checked digit by digit (time.Parse for every entry
// is a third of a million-entry reload); anything else goes through cryptobyte.
func validTime(s *cryptobyte.String) bool {
	var el cryptobyte.String
	if !readTimeElement(s, &el) {
		return false
	}
	if fastUTCTime(el) {
		return true
	}
	var t time.Time
	return parseTime(el, &t)
}

// fastUTCTime reports whether el is a UTCTime "YYMMDDHHMMSSZ" with every field in range,
// which time.Parse accepts and formats back the same. It says false for all else, valid
// or not.
func fastUTCTime(el []byte) bool {
	if len(el) != 15 || el[0] != byte(cbasn1.UTCTime) || el[1] != 13 || el[14] != 'Z' {
		return false
	}
	var v [6]int
	for i := range v {
		hi, lo := el[2+2*i]-'0', el[3+2*i]-'0'
		if hi > 9 || lo > 9 {
			return false
		}
		v[i] = int(hi)*10 + int(lo)
	}
	year := 1900 + v[0] // time.Parse's "06": 69–99 are 19xx, 00–68 20xx
	if v[0] < 69 {
		year += 100
	}
	mdays := [13]int{0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		mdays[2] = 29
	}
	return v[1] >= 1 && v[1] <= 12 && v[2] >= 1 && v[2] <= mdays[v[1]] && v[3] <= 23 && v[4] <= 59 && v[5] <= 59
}
