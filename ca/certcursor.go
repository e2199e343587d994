package ca

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// A certificate page's cursor names the last record the page returned: its
// issuance time and decimal serial, the listing's order. It is opaque to
// clients (base64url of "c1.SECONDS.NANOS.SERIAL"), so the order can change
// without breaking what they do with it, which is to pass it back as before=.
const cursorVersion = "c1"

// cursorOf is the cursor of a page whose last record is ref.
func cursorOf(ref certRef) string {
	s := cursorVersion + "." + strconv.FormatInt(ref.sec, 10) + "." + strconv.FormatInt(int64(ref.nsec), 10) + "." + ref.key
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// maxCursor bounds what parseCursor decodes: a 64-digit hex serial (what
// ParseSerial takes) is at most 78 decimal digits.
const maxCursor = 160

// parseCursor reads a cursor cursorOf wrote. Anything else (damaged, from
// another version, made up) is a bad request: a page must never start
// somewhere the client did not get to.
func parseCursor(s string) (*certRef, error) {
	bad := badRequest("before=%.40q is not a cursor this CA gave out: start the search again without before=", s)
	if len(s) > maxCursor {
		return nil, bad
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s) // Strict: unused bits zero, one spelling
	if err != nil {
		return nil, bad
	}
	f := strings.Split(string(b), ".")
	if len(f) != 4 || f[0] != cursorVersion {
		return nil, bad
	}
	sec, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || sec < minCursorSec || sec > maxCursorSec {
		return nil, bad
	}
	nsec, err := strconv.ParseInt(f[2], 10, 32)
	if err != nil || nsec < 0 || nsec >= 1e9 {
		return nil, bad
	}
	if !decimalKey(f[3]) {
		return nil, bad
	}
	if strconv.FormatInt(sec, 10) != f[1] || strconv.FormatInt(nsec, 10) != f[2] {
		return nil, bad // one spelling per position: "+1" or "01" is not ours
	}
	return &certRef{key: f[3], sec: sec, nsec: int32(nsec)}, nil
}

// The seconds a record's IssuedAt can have: the zero time (a record without
// one) up to the year 9999.
var (
	minCursorSec = time.Time{}.Unix()
	maxCursorSec = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
)

// decimalKey: a serial as the tables key it, positive decimal without
// leading zeros, at most 78 digits.
func decimalKey(s string) bool {
	if s == "" || len(s) > 78 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
