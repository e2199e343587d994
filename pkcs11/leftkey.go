package pkcs11

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"
)

// KeyLeftError is the error of an enrollment whose new key pair could not
// be removed again (the token was pulled out before the certificate was
// written). It wraps ErrKeyLeft and names the key, so that the caller can
// later remove exactly that key (RemoveLeftKey) and nothing else.
type KeyLeftError struct {
	// ID is the key pair's CKA_ID.
	ID []byte
	// Public is its public key; nil when it could not be read (then
	// RemoveLeftKey cannot tell the key, and only the next enrollment or a
	// wipe removes it).
	Public crypto.PublicKey

	err error
}

func (e *KeyLeftError) Error() string { return e.err.Error() }
func (e *KeyLeftError) Unwrap() error { return e.err }

// RemoveLeftKey removes the key pair an interrupted enrollment left (a
// KeyLeftError names it) once the token is back: the private and public key
// objects with CKA_ID id whose public key is pub, and nothing else. It
// removes nothing, and returns ErrNotLeftKey, when a certificate with that
// CKA_ID is on the token (then the key has its certificate after all: a
// credential, not a leftover) or when any object with the ID is not that
// key; it returns 0 and no error when the key is gone already.
//
// The private key is a private object: PKCS#11 shows it, and lets it be
// destroyed, only in a session logged in as user, so pin is the user PIN;
// it is not kept. Profiles whose key slot is fixed (ykcs11) are refused: the
// next enrollment overwrites the slot.
func (t *Token) RemoveLeftKey(pin *PIN, id []byte, pub crypto.PublicKey) (int, error) {
	if t.mod.profile.FixedKeyID != nil {
		return 0, fmt.Errorf("pkcs11: token %s (%s): remove the leftover key %x: %w: the next enrollment overwrites the key slot", t.info.Label, t.mod.profile.Name, id, ErrNotSupported)
	}
	if len(id) == 0 || pub == nil {
		return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key: no key ID or public key to tell it by", t.info.Label)
	}
	if err := t.Login(pin); err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	objs, err := t.objectsLocked([]*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)})
	if err != nil {
		return 0, err
	}
	// Check every object first, then destroy: a refusal removes nothing.
	var pubSeen bool
	for _, o := range objs {
		switch {
		case !bytes.Equal(o.ID, id):
			// The module matched more than asked: never touch it.
			return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: the module returned an object of ID %x: %w", t.info.Label, id, o.ID, ErrNotLeftKey)
		case o.Class == ClassCertificate:
			return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: a certificate with its ID is on the token, so the key is not left over: %w", t.info.Label, id, ErrNotLeftKey)
		case o.Class != ClassPrivateKey && o.Class != ClassPublicKey:
			return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: another object (%s %q) has its ID: %w", t.info.Label, id, o.Class, o.Label, ErrNotLeftKey)
		case !ownLabel(o.Label):
			return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: the %s is labelled %q, not by imapgate: %w", t.info.Label, id, o.Class, o.Label, ErrNotLeftKey)
		case o.Public != nil && !samePublicKey(pub, o.Public):
			return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: the %s with its ID is another key: %w", t.info.Label, id, o.Class, ErrNotLeftKey)
		case o.Class == ClassPublicKey && o.Public == nil:
			return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: its public key cannot be read to tell it: %w", t.info.Label, id, ErrNotLeftKey)
		}
		if o.Public != nil {
			pubSeen = true
		}
	}
	if len(objs) == 0 {
		return 0, nil
	}
	if !pubSeen {
		// An EC private key does not show its public half: without the
		// public key object nothing proves this is the key.
		return 0, fmt.Errorf("pkcs11: token %s: remove the leftover key %x: no object with its ID shows its public key: %w (imapgate token wipe removes it)", t.info.Label, id, ErrNotLeftKey)
	}
	n := 0
	var errs []error
	for _, o := range objs {
		if err := t.mod.ctx.DestroyObject(t.sh, o.h); err != nil {
			errs = append(errs, tokenError(t.info.Label, "delete the leftover "+string(o.Class), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
