package pkcs11

import (
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"
)

// Errors to match with errors.Is. The errors this package returns wrap them
// together with the PKCS#11 return value and a sentence saying what to do.
var (
	ErrPINIncorrect = errors.New("wrong PIN")
	ErrPINLocked    = errors.New("PIN locked")
	// ErrPINFinalTry comes with ErrPINIncorrect when the token says one
	// more wrong PIN locks it.
	ErrPINFinalTry    = errors.New("one PIN try left")
	ErrPINInvalid     = errors.New("PIN not acceptable")
	ErrTokenFull      = errors.New("token full")
	ErrNotLoggedIn    = errors.New("not logged in")
	ErrTokenGone      = errors.New("token removed")
	ErrNotSupported   = errors.New("not supported by this token")
	ErrWriteProtected = errors.New("token write-protected")
	// ErrKeyLeft comes with a failed enrollment whose new key could not be
	// removed (the token was pulled out): the token's next enrollment
	// removes it, or RemoveLeftKey with the *KeyLeftError's ID and public
	// key once the token is back.
	ErrKeyLeft = errors.New("new key left on the token")
	// ErrNotLeftKey: RemoveLeftKey found, under the key's CKA_ID, something
	// that is not the key an interrupted enrollment left (a certificate,
	// another key): nothing was removed.
	ErrNotLeftKey = errors.New("not the key the interrupted enrollment left")
)

// pinError explains a failed login, with the tries left when the token tells.
func pinError(label string, who string, err error, ti *TokenInfo) error {
	switch {
	case errors.Is(err, p11.Error(p11.CKR_PIN_INCORRECT)):
		left := "the token does not say how many tries are left"
		var final error
		// The flags describe the user and SO PINs only; a PUK's counter is
		// not reported through PKCS#11.
		if ti != nil && (who == "user" || who == "SO") {
			f := ti.Flags
			lockedFlag, finalFlag, lowFlag := f.PINLocked, f.PINFinalTry, f.PINCountLow
			if who == "SO" {
				lockedFlag, finalFlag, lowFlag = f.SOPINLocked, f.SOPINFinalTry, f.SOPINCountLow
			}
			switch {
			case lockedFlag:
				return fmt.Errorf("pkcs11: token %s: wrong %s; the %s is now locked: %w: %s: %w", label, whoNoun(who), whoNoun(who), ErrPINLocked, unblockHint(who), err)
			case finalFlag:
				left, final = "1 try left: one more wrong PIN locks the token", ErrPINFinalTry
			case lowFlag:
				left = "few tries left, the token reports its retry counter as low"
			}
		}
		if final != nil {
			return fmt.Errorf("pkcs11: token %s: %w for the %s: %s (%w): %w", label, ErrPINIncorrect, whoNoun(who), left, final, err)
		}
		return fmt.Errorf("pkcs11: token %s: %w for the %s: %s: %w", label, ErrPINIncorrect, whoNoun(who), left, err)
	case errors.Is(err, p11.Error(p11.CKR_PIN_LOCKED)):
		return fmt.Errorf("pkcs11: token %s: the %s is locked: %w: %s: %w", label, whoNoun(who), ErrPINLocked, unblockHint(who), err)
	case errors.Is(err, p11.Error(p11.CKR_PIN_LEN_RANGE)), errors.Is(err, p11.Error(p11.CKR_PIN_INVALID)):
		lim := ""
		if ti != nil && ti.MaxPINLen > 0 {
			lim = fmt.Sprintf(" (%d to %d characters)", ti.MinPINLen, ti.MaxPINLen)
		}
		return fmt.Errorf("pkcs11: token %s: %w: the %s has the wrong length or characters%s: %w", label, ErrPINInvalid, whoNoun(who), lim, err)
	case errors.Is(err, p11.Error(p11.CKR_PIN_EXPIRED)):
		return fmt.Errorf("pkcs11: token %s: the %s has expired: change it first (imapgate token pin): %w", label, whoNoun(who), err)
	}
	return tokenError(label, "login as "+who, err)
}

func whoNoun(who string) string {
	switch who {
	case "user":
		return "user PIN"
	case "PUK":
		return "PUK"
	}
	return who + " PIN"
}

func unblockHint(who string) string {
	switch who {
	case "PUK":
		return "a blocked PUK can only be cleared by resetting the PIV applet (ykman piv reset), which erases the keys"
	case "SO":
		return "an SO PIN cannot be unblocked: the token must be re-initialised, which erases it"
	}
	return "unblock it with the SO PIN or PUK (imapgate token unblock), never by guessing"
}

// tokenError maps the PKCS#11 return values a person can act on to a sentence.
func tokenError(label, op string, err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	hint := ""
	switch {
	case errors.Is(err, p11.Error(p11.CKR_DEVICE_MEMORY)):
		sentinel, hint = ErrTokenFull, "the token has no room left: remove old objects (imapgate token wipe) or use another token"
	case errors.Is(err, p11.Error(p11.CKR_USER_NOT_LOGGED_IN)):
		sentinel, hint = ErrNotLoggedIn, "log in with the user PIN first"
	case errors.Is(err, p11.Error(p11.CKR_TOKEN_NOT_PRESENT)), errors.Is(err, p11.Error(p11.CKR_DEVICE_REMOVED)),
		errors.Is(err, p11.Error(p11.CKR_SESSION_HANDLE_INVALID)), errors.Is(err, p11.Error(p11.CKR_SESSION_CLOSED)):
		sentinel, hint = ErrTokenGone, "the token was removed or reset: insert it again and retry"
	case errors.Is(err, p11.Error(p11.CKR_TOKEN_WRITE_PROTECTED)):
		sentinel, hint = ErrWriteProtected, "the token is write-protected"
	case errors.Is(err, p11.Error(p11.CKR_USER_TYPE_INVALID)):
		sentinel, hint = ErrNotLoggedIn, "this token needs an SO login (for a YubiKey: the PIV management key) for this step"
	case errors.Is(err, p11.Error(p11.CKR_FUNCTION_NOT_SUPPORTED)), errors.Is(err, p11.Error(p11.CKR_MECHANISM_INVALID)):
		sentinel, hint = ErrNotSupported, "the token does not support this operation"
	case errors.Is(err, p11.Error(p11.CKR_PIN_LOCKED)):
		sentinel, hint = ErrPINLocked, unblockHint("user")
	}
	if sentinel == nil {
		return fmt.Errorf("pkcs11: token %s: %s: %w", label, op, err)
	}
	return fmt.Errorf("pkcs11: token %s: %s: %w: %s: %w", label, op, sentinel, hint, err)
}
