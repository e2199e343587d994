package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// KeyType is the kind of key pair generated on the token.
type KeyType string

// Key types. EC P-256 is the default: small, fast on every card, and it
// sidesteps the RSA-PSS requirement of TLS 1.3 and ROCA-era on-chip RSA.
const (
	KeyECP256  KeyType = "ec-p256"
	KeyRSA2048 KeyType = "rsa-2048"
)

// ParseKeyType accepts "ec-p256" (also "" → default) and "rsa-2048".
func ParseKeyType(s string) (KeyType, error) {
	switch KeyType(s) {
	case "", KeyECP256:
		return KeyECP256, nil
	case KeyRSA2048:
		return KeyRSA2048, nil
	}
	return "", fmt.Errorf("pkcs11: unknown key type %q: use ec-p256 (default) or rsa-2048", s)
}

// Key is a key pair on the token.
type Key struct {
	ID     []byte
	Label  string
	Type   KeyType
	Public crypto.PublicKey

	priv, pub p11.ObjectHandle
	t         *Token
}

// GenerateKey generates a key pair on the token: private key CKA_TOKEN,
// CKA_PRIVATE and CKA_SENSITIVE true, CKA_EXTRACTABLE false (where the module
// accepts the attribute), CKA_SIGN true; one CKA_ID for both halves. The
// caller must be logged in: as user, or as SO for a profile with SOForWrite.
func (t *Token) GenerateKey(kt KeyType, label string) (*Key, error) {
	prof := t.mod.profile
	if !prof.supports(kt) {
		return nil, fmt.Errorf("pkcs11: token %s (%s): key type %s: %w", t.info.Label, prof.Name, kt, ErrNotSupported)
	}
	id := bytes.Clone(prof.FixedKeyID)
	if id == nil {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("pkcs11: random key ID: %w", err)
		}
	}
	pubT, privT, mech, err := prof.keyTemplates(kt, id, label)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	pubH, privH, err := t.mod.ctx.GenerateKeyPair(t.sh, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, pubT, privT)
	if err != nil {
		return nil, fmt.Errorf("%w (no objects were written)", tokenError(t.info.Label, "generate "+string(kt)+" key pair", err))
	}
	k := &Key{ID: id, Label: label, Type: kt, priv: privH, pub: pubH, t: t}
	if k.Public, err = t.readPublicLocked(pubH, kt); err != nil {
		// A key we cannot describe is a key we cannot certify: remove it.
		// A token pulled out just now keeps it; the next enrollment of
		// the token removes such a key (it has no certificate).
		if derr := errors.Join(t.mod.ctx.DestroyObject(t.sh, privH), t.mod.ctx.DestroyObject(t.sh, pubH)); derr != nil {
			return nil, keyLeft(err, id, nil, derr)
		}
		return nil, fmt.Errorf("%w (the new key was removed from the token again)", err)
	}
	return k, nil
}

func (t *Token) readPublicLocked(h p11.ObjectHandle, kt KeyType) (crypto.PublicKey, error) {
	switch kt {
	case KeyECP256:
		a, err := t.mod.ctx.GetAttributeValue(t.sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, tokenError(t.info.Label, "read EC public key", err)
		}
		return parseECPoint(a[0].Value)
	case KeyRSA2048:
		a, err := t.mod.ctx.GetAttributeValue(t.sh, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_MODULUS, nil), p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, tokenError(t.info.Label, "read RSA public key", err)
		}
		n := new(big.Int).SetBytes(a[0].Value)
		e := new(big.Int).SetBytes(a[1].Value)
		if n.Sign() == 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, fmt.Errorf("pkcs11: token %s returned a malformed RSA public key", t.info.Label)
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	}
	return nil, fmt.Errorf("pkcs11: key type %q: %w", kt, ErrNotSupported)
}

// parseECPoint reads CKA_EC_POINT: PKCS#11 says DER OCTET STRING(04||X||Y),
// some modules hand back the raw point.
func parseECPoint(v []byte) (*ecdsa.PublicKey, error) {
	pt := v
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		pt = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: token returned a malformed P-256 public key: %w", err)
	}
	return pub, nil
}

// Signer returns a crypto.Signer backed by the key's private half.
func (k *Key) Signer() *Signer {
	return &Signer{t: k.t, h: k.priv, pub: k.Public, id: k.ID}
}
