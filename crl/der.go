package crl

import (
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The reads of a CRL entry's elements. Each is cryptobyte's, with a fast path for what
// an entry is made of: elements of a one-byte tag and a length under 128 (DER's short
// form), which cryptobyte's general code (long lengths, any tag) read at a third of a
// million-entry reload's parsing. The fast path takes only what cryptobyte would take
// the same way; anything else, valid or not, goes through cryptobyte.

// shortLen is the length of the element that opens s, header included, if it has tag
// and a short-form length that s holds; else 0.
func shortLen(s []byte, tag cbasn1.Tag) int {
	if len(s) >= 2 && s[0] == byte(tag) && tag&0x1f != 0x1f && s[1] < 0x80 && int(s[1]) <= len(s)-2 {
		return 2 + int(s[1])
	}
	return 0
}

// readASN1 is s.ReadASN1(out, tag).
func readASN1(s, out *cryptobyte.String, tag cbasn1.Tag) bool {
	if n := shortLen(*s, tag); n > 0 {
		*out, *s = (*s)[2:n], (*s)[n:]
		return true
	}
	return s.ReadASN1(out, tag)
}

// skipASN1 is s.SkipASN1(tag).
func skipASN1(s *cryptobyte.String, tag cbasn1.Tag) bool {
	if n := shortLen(*s, tag); n > 0 {
		*s = (*s)[n:]
		return true
	}
	return s.SkipASN1(tag)
}

// readTimeElement reads a UTCTime or GeneralizedTime element, header included.
func readTimeElement(s, out *cryptobyte.String) bool {
	n := shortLen(*s, cbasn1.UTCTime)
	if n == 0 {
		n = shortLen(*s, cbasn1.GeneralizedTime)
	}
	if n > 0 {
		*out, *s = (*s)[:n], (*s)[n:]
		return true
	}
	var tag cbasn1.Tag
	return s.ReadAnyASN1Element(out, &tag) && (tag == cbasn1.UTCTime || tag == cbasn1.GeneralizedTime)
}
