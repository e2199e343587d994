package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// Signer is a crypto.Signer whose private key stays on the token. It works
// for x509.CreateCertificateRequest and as tls.Certificate.PrivateKey
// (ECDSA; RSA PKCS#1 v1.5 and PSS, which TLS 1.3 needs). It is safe for
// concurrent use: calls are serialised on the token's session. The token
// must be logged in as user.
type Signer struct {
	t   *Token
	h   p11.ObjectHandle
	pub crypto.PublicKey
	id  []byte
}

var _ crypto.Signer = (*Signer)(nil)

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// ID is the key's CKA_ID.
func (s *Signer) ID() []byte { return s.id }

// DigestInfo prefixes for PKCS#1 v1.5 over CKM_RSA_PKCS (RFC 8017 §9.2):
// the raw mechanism is the one every card has, CKM_SHA256_RSA_PKCS is not.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var pssParams = map[crypto.Hash]struct{ hash, mgf uint }{
	crypto.SHA256: {p11.CKM_SHA256, p11.CKG_MGF1_SHA256},
	crypto.SHA384: {p11.CKM_SHA384, p11.CKG_MGF1_SHA384},
	crypto.SHA512: {p11.CKM_SHA512, p11.CKG_MGF1_SHA512},
}

// Sign signs digest (already hashed with opts.HashFunc()) on the token.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("pkcs11: sign: digest is %d bytes, %v wants %d", len(digest), h, h.Size())
	}
	switch s.pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := s.sign(p11.NewMechanism(p11.CKM_ECDSA, nil), digest)
		if err != nil {
			return nil, err
		}
		return ecdsaRawToASN1(raw)
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			pp, ok := pssParams[h]
			if !ok {
				return nil, fmt.Errorf("pkcs11: RSA-PSS with %v: %w", h, ErrNotSupported)
			}
			salt := pss.SaltLength
			if salt == rsa.PSSSaltLengthEqualsHash || salt == rsa.PSSSaltLengthAuto {
				// Auto would mean "as long as fits"; the hash length is what
				// TLS 1.3 requires and what every verifier accepts.
				salt = h.Size()
			}
			if salt < 0 {
				return nil, fmt.Errorf("pkcs11: RSA-PSS salt length %d: %w", salt, ErrNotSupported)
			}
			return s.sign(p11.NewMechanism(p11.CKM_RSA_PKCS_PSS, p11.NewPSSParams(pp.hash, pp.mgf, uint(salt))), digest)
		}
		prefix, ok := digestInfoPrefix[h]
		if !ok {
			return nil, fmt.Errorf("pkcs11: RSA PKCS#1 v1.5 with %v: %w", h, ErrNotSupported)
		}
		msg := make([]byte, 0, len(prefix)+len(digest))
		msg = append(append(msg, prefix...), digest...)
		return s.sign(p11.NewMechanism(p11.CKM_RSA_PKCS, nil), msg)
	}
	return nil, fmt.Errorf("pkcs11: sign: key type %T: %w", s.pub, ErrNotSupported)
}

func (s *Signer) sign(m *p11.Mechanism, data []byte) ([]byte, error) {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("pkcs11: token %s: sign: token closed", t.info.Label)
	}
	if err := t.mod.ctx.SignInit(t.sh, []*p11.Mechanism{m}, s.h); err != nil {
		return nil, tokenError(t.info.Label, "sign", err)
	}
	sig, err := t.mod.ctx.Sign(t.sh, data)
	if err != nil {
		return nil, tokenError(t.info.Label, "sign", err)
	}
	return sig, nil
}

// ecdsaRawToASN1 turns PKCS#11's r||s into the ASN.1 SEQUENCE Go and TLS use.
func ecdsaRawToASN1(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, errors.New("pkcs11: token returned a malformed ECDSA signature")
	}
	n := len(raw) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])})
}
