package pkcs11

import (
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// TestTokenErrorMapping: every PKCS#11 failure a help desk can act on maps
// to a sentinel and a sentence saying what to do, and keeps the raw code.
func TestTokenErrorMapping(t *testing.T) {
	cases := []struct {
		ckr      uint
		sentinel error
		hint     string
	}{
		{p11.CKR_DEVICE_MEMORY, ErrTokenFull, "imapgate token wipe"},
		{p11.CKR_USER_NOT_LOGGED_IN, ErrNotLoggedIn, "log in"},
		{p11.CKR_USER_TYPE_INVALID, ErrNotLoggedIn, "management key"},
		{p11.CKR_TOKEN_NOT_PRESENT, ErrTokenGone, "insert it again"},
		{p11.CKR_DEVICE_REMOVED, ErrTokenGone, "insert it again"},
		{p11.CKR_SESSION_HANDLE_INVALID, ErrTokenGone, "insert it again"},
		{p11.CKR_TOKEN_WRITE_PROTECTED, ErrWriteProtected, "write-protected"},
		{p11.CKR_FUNCTION_NOT_SUPPORTED, ErrNotSupported, "does not support"},
		{p11.CKR_MECHANISM_INVALID, ErrNotSupported, "does not support"},
		{p11.CKR_PIN_LOCKED, ErrPINLocked, "imapgate token unblock"},
		{p11.CKR_GENERAL_ERROR, nil, ""},
	}
	for _, c := range cases {
		raw := p11.Error(c.ckr)
		t.Run(raw.Error(), func(t *testing.T) {
			err := tokenError("alice-card", "write certificate", raw)
			if !errors.Is(err, raw) {
				t.Errorf("%v lost the PKCS#11 code", err)
			}
			if c.sentinel != nil && !errors.Is(err, c.sentinel) {
				t.Errorf("%v is not %v", err, c.sentinel)
			}
			if !strings.Contains(err.Error(), "token alice-card: write certificate") || !strings.Contains(err.Error(), c.hint) {
				t.Errorf("%q lacks the subject, the operation or the hint %q", err, c.hint)
			}
		})
	}
}

func TestPINErrorMapping(t *testing.T) {
	flags := func(f uint) *TokenInfo {
		ti := convTokenInfo(0, p11.TokenInfo{Flags: f, MinPinLen: 6, MaxPinLen: 8})
		return &ti
	}
	cases := []struct {
		name     string
		who      string
		ckr      uint
		ti       *TokenInfo
		sentinel error
		want     string
	}{
		{"wrong, token silent", "user", p11.CKR_PIN_INCORRECT, flags(0), ErrPINIncorrect, "does not say how many tries"},
		{"wrong, count low", "user", p11.CKR_PIN_INCORRECT, flags(p11.CKF_USER_PIN_COUNT_LOW), ErrPINIncorrect, "few tries left"},
		{"wrong, final try", "user", p11.CKR_PIN_INCORRECT, flags(p11.CKF_USER_PIN_COUNT_LOW | p11.CKF_USER_PIN_FINAL_TRY), ErrPINIncorrect, "1 try left"},
		{"wrong, now locked", "user", p11.CKR_PIN_INCORRECT, flags(p11.CKF_USER_PIN_LOCKED), ErrPINLocked, "now locked"},
		{"SO final try", "SO", p11.CKR_PIN_INCORRECT, flags(p11.CKF_SO_PIN_FINAL_TRY), ErrPINIncorrect, "1 try left"},
		{"SO flags do not count for the user", "user", p11.CKR_PIN_INCORRECT, flags(p11.CKF_SO_PIN_FINAL_TRY), ErrPINIncorrect, "does not say"},
		{"locked", "user", p11.CKR_PIN_LOCKED, nil, ErrPINLocked, "unblock it with the SO PIN or PUK"},
		{"SO locked", "SO", p11.CKR_PIN_LOCKED, nil, ErrPINLocked, "re-initialised"},
		{"PUK locked", "PUK", p11.CKR_PIN_LOCKED, nil, ErrPINLocked, "ykman piv reset"},
		{"length", "new user", p11.CKR_PIN_LEN_RANGE, flags(0), ErrPINInvalid, "6 to 8 characters"},
		{"expired", "user", p11.CKR_PIN_EXPIRED, nil, nil, "imapgate token pin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := pinError("alice-card", c.who, p11.Error(c.ckr), c.ti)
			if c.sentinel != nil && !errors.Is(err, c.sentinel) {
				t.Errorf("%v is not %v", err, c.sentinel)
			}
			if !errors.Is(err, p11.Error(c.ckr)) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%q lacks %q or the PKCS#11 code", err, c.want)
			}
		})
	}
}
