package crl

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestDERFastPath: the entry reads take and leave what cryptobyte's take and leave, for
// every tag and length byte, with the content short of, equal to and past the length,
// for long-form lengths, and for a high tag number, which cryptobyte does not read.
func TestDERFastPath(t *testing.T) {
	var inputs [][]byte
	for tag := range 256 {
		for lenByte := range 256 {
			for _, more := range []int{0, 1, 3, 130} {
				in := append([]byte{byte(tag), byte(lenByte)}, bytes.Repeat([]byte{0x17}, more)...)
				inputs = append(inputs, in)
			}
		}
	}
	same := func(name string, in []byte, ok, wantOK bool, out, wantOut, rest, wantRest cryptobyte.String) {
		t.Helper()
		if ok != wantOK || ok && (!bytes.Equal(out, wantOut) || !bytes.Equal(rest, wantRest)) {
			t.Fatalf("%s(%x): %v %x %x, cryptobyte %v %x %x", name, in, ok, out, rest, wantOK, wantOut, wantRest)
		}
	}
	for _, in := range inputs {
		for _, tag := range []cbasn1.Tag{cbasn1.SEQUENCE, cbasn1.INTEGER, cbasn1.OBJECT_IDENTIFIER, cbasn1.OCTET_STRING, 0x1f} {
			s, want := cryptobyte.String(in), cryptobyte.String(in)
			var out, wantOut cryptobyte.String
			same("readASN1", in, readASN1(&s, &out, tag), want.ReadASN1(&wantOut, tag), out, wantOut, s, want)
			s, want = cryptobyte.String(in), cryptobyte.String(in)
			same("skipASN1", in, skipASN1(&s, tag), want.SkipASN1(tag), nil, nil, s, want)
		}
		s, want := cryptobyte.String(in), cryptobyte.String(in)
		var out, wantOut cryptobyte.String
		var tag cbasn1.Tag
		wantOK := want.ReadAnyASN1Element(&wantOut, &tag) && (tag == cbasn1.UTCTime || tag == cbasn1.GeneralizedTime)
		same("readTimeElement", in, readTimeElement(&s, &out), wantOK, out, wantOut, s, want)
	}
}
