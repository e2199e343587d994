package pkcs11

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"unsafe"

	"github.com/imapgate/imapgate/secretfile"
)

// PIN holds a user PIN, an SO PIN or a YubiKey management key. It never
// prints: String, GoString, Format, LogValue and MarshalText all redact, so a
// PIN that slips into a log line or an error shows as "[REDACTED]". Call Wipe
// when it is no longer needed.
//
// The bytes live in one slice that Wipe overwrites. The PKCS#11 binding takes
// a Go string; we hand it a string that aliases that slice instead of a copy,
// so no second copy lingers on the Go heap. (The binding copies it into C
// memory for the duration of the call and frees it; that copy is out of our
// reach.)
type PIN struct {
	b []byte
}

// Redacted is what a PIN prints as.
const Redacted = "[REDACTED]"

// NewPIN copies s into a PIN. Prefer ReadPINFile or PINFromBytes: a Go
// string cannot be wiped.
func NewPIN(s string) *PIN { return &PIN{b: []byte(s)} }

// PINFromBytes takes ownership of b (it is wiped with the PIN).
func PINFromBytes(b []byte) *PIN { return &PIN{b: b} }

// ReadPINFile reads a PIN from the first line of a file. The file's buffer is
// wiped; only the PIN's own bytes remain, until Wipe.
func ReadPINFile(path string) (*PIN, error) {
	raw, err := secretfile.Read(path, "pkcs11: PIN file")
	if err != nil {
		return nil, err
	}
	defer wipe(raw)
	line := raw
	if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 {
		return nil, fmt.Errorf("pkcs11: PIN file %s is empty: put the PIN on its first line", path)
	}
	return PINFromBytes(bytes.Clone(line)), nil
}

// Len is the PIN's length in bytes (for length checks; it reveals no digits).
func (p *PIN) Len() int {
	if p == nil {
		return 0
	}
	return len(p.b)
}

// Empty reports whether there is no PIN.
func (p *PIN) Empty() bool { return p.Len() == 0 }

// Wipe overwrites the PIN's bytes with zeros and forgets them.
func (p *PIN) Wipe() {
	if p == nil {
		return
	}
	wipe(p.b)
	p.b = nil
}

// The printing methods have value receivers so that a PIN copied by value
// (say, inside a struct printed with %+v) redacts too.

// String redacts.
func (p PIN) String() string { return Redacted }

// GoString redacts (%#v).
func (p PIN) GoString() string { return Redacted }

// Format redacts under every verb, including %x and %q.
func (p PIN) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue redacts for log/slog.
func (p PIN) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText redacts for encoding/json and friends.
func (p PIN) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// unsafeString returns a string that shares the PIN's bytes, valid until Wipe.
// It exists only to pass the PIN to the PKCS#11 binding without a heap copy.
func (p *PIN) unsafeString() string {
	if p.Len() == 0 {
		return ""
	}
	return unsafe.String(&p.b[0], len(p.b))
}

// withPrefix returns a new PIN "prefix+pin" (ykcs11 wants "puk:…"/"pin:…");
// the caller wipes it.
func (p *PIN) withPrefix(prefix string) *PIN {
	b := make([]byte, 0, len(prefix)+p.Len())
	b = append(b, prefix...)
	if p != nil {
		b = append(b, p.b...)
	}
	return PINFromBytes(b)
}

func wipe(b []byte) {
	clear(b)
}

// errNoPIN is returned when an operation needs a PIN and got none.
var errNoPIN = errors.New("no PIN given")
