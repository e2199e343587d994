package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// readBool reads boolean attributes of an object straight from the token.
func readAttrs(t *testing.T, tok *Token, h p11.ObjectHandle, types ...uint) map[uint][]byte {
	t.Helper()
	tmpl := make([]*p11.Attribute, len(types))
	for i, ty := range types {
		tmpl[i] = p11.NewAttribute(ty, nil)
	}
	tok.mu.Lock()
	defer tok.mu.Unlock()
	a, err := tok.mod.ctx.GetAttributeValue(tok.sh, h, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint][]byte{}
	for _, x := range a {
		m[x.Type] = x.Value
	}
	return m
}

func TestGenerateKey(t *testing.T) {
	s := newSoftToken(t)
	if err := s.tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			k, err := s.tok.GenerateKey(kt, "imapgate-keytest")
			if err != nil {
				t.Fatal(err)
			}
			if len(k.ID) != 16 {
				t.Errorf("CKA_ID is %d bytes, want 16 random bytes", len(k.ID))
			}
			priv := readAttrs(t, s.tok, k.priv, p11.CKA_TOKEN, p11.CKA_PRIVATE, p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE,
				p11.CKA_SIGN, p11.CKA_ALWAYS_SENSITIVE, p11.CKA_NEVER_EXTRACTABLE, p11.CKA_LOCAL, p11.CKA_DECRYPT,
				p11.CKA_ID, p11.CKA_LABEL)
			wantBool := map[uint]bool{
				p11.CKA_TOKEN: true, p11.CKA_PRIVATE: true, p11.CKA_SENSITIVE: true, p11.CKA_EXTRACTABLE: false,
				p11.CKA_SIGN: true, p11.CKA_ALWAYS_SENSITIVE: true, p11.CKA_NEVER_EXTRACTABLE: true, p11.CKA_LOCAL: true,
				p11.CKA_DECRYPT: false,
			}
			for ty, want := range wantBool {
				if got := len(priv[ty]) == 1 && priv[ty][0] == 1; got != want {
					t.Errorf("private key attribute 0x%x = %v, want %v", ty, priv[ty], want)
				}
			}
			pub := readAttrs(t, s.tok, k.pub, p11.CKA_ID, p11.CKA_LABEL, p11.CKA_TOKEN)
			if !bytes.Equal(priv[p11.CKA_ID], k.ID) || !bytes.Equal(pub[p11.CKA_ID], k.ID) {
				t.Errorf("CKA_ID differs: priv %x pub %x key %x", priv[p11.CKA_ID], pub[p11.CKA_ID], k.ID)
			}
			if string(priv[p11.CKA_LABEL]) != "imapgate-keytest" || string(pub[p11.CKA_LABEL]) != "imapgate-keytest" {
				t.Errorf("labels %q %q", priv[p11.CKA_LABEL], pub[p11.CKA_LABEL])
			}
			// The private key cannot be read: the token refuses its value.
			secret := []uint{p11.CKA_VALUE, p11.CKA_PRIVATE_EXPONENT, p11.CKA_PRIME_1}
			if kt == KeyECP256 {
				secret = []uint{p11.CKA_VALUE}
			}
			for _, ty := range secret {
				s.tok.mu.Lock()
				a, err := s.tok.mod.ctx.GetAttributeValue(s.tok.sh, k.priv, []*p11.Attribute{p11.NewAttribute(ty, nil)})
				s.tok.mu.Unlock()
				if !errors.Is(err, p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)) && !errors.Is(err, p11.Error(p11.CKR_ATTRIBUTE_TYPE_INVALID)) {
					t.Errorf("reading private attribute 0x%x: got %v (%d attributes), want CKR_ATTRIBUTE_SENSITIVE", ty, err, len(a))
				}
			}
			// FindKey finds it again from the ID alone.
			k2, err := s.tok.FindKey(k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if k2.Type != kt || !samePublicKey(k2.Public, k.Public) {
				t.Errorf("FindKey: %v %T", k2.Type, k2.Public)
			}
		})
	}
	if _, err := s.tok.GenerateKey("ed448", "x"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("unknown key type: got %v", err)
	}
}

func TestGenerateKeyNotLoggedIn(t *testing.T) {
	s := newSoftToken(t)
	_, err := s.tok.GenerateKey(KeyECP256, "imapgate-x")
	if !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("got %v, want ErrNotLoggedIn", err)
	}
}

func TestSigner(t *testing.T) {
	s := newSoftToken(t)
	if err := s.tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	msg := []byte("imapgate signs this")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		k, err := s.tok.GenerateKey(kt, "imapgate-sign")
		if err != nil {
			t.Fatal(err)
		}
		sg := k.Signer()
		type tc struct {
			name   string
			digest []byte
			opts   crypto.SignerOpts
		}
		cases := []tc{{"sha256", d256[:], crypto.SHA256}, {"sha384", d384[:], crypto.SHA384}}
		if kt == KeyRSA2048 {
			cases = append(cases,
				tc{"pss-sha256-equalshash", d256[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}},
				tc{"pss-sha384-auto", d384[:], &rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: rsa.PSSSaltLengthAuto}})
		}
		for _, c := range cases {
			t.Run(string(kt)+"/"+c.name, func(t *testing.T) {
				sig, err := sg.Sign(rand.Reader, c.digest, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				switch pub := sg.Public().(type) {
				case *ecdsa.PublicKey:
					if !ecdsa.VerifyASN1(pub, c.digest, sig) {
						t.Fatal("ECDSA signature does not verify")
					}
				case *rsa.PublicKey:
					if pss, ok := c.opts.(*rsa.PSSOptions); ok {
						err = rsa.VerifyPSS(pub, pss.Hash, c.digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
					} else {
						err = rsa.VerifyPKCS1v15(pub, c.opts.HashFunc(), c.digest, sig)
					}
					if err != nil {
						t.Fatal(err)
					}
				}
			})
		}
		t.Run(string(kt)+"/csr", func(t *testing.T) {
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "alice@example.org"}, EmailAddresses: []string{"alice@example.org"}}, sg)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(string(kt)+"/concurrent", func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for range 16 {
				wg.Go(func() {
					sig, err := sg.Sign(rand.Reader, d256[:], crypto.SHA256)
					if err == nil {
						switch pub := sg.Public().(type) {
						case *ecdsa.PublicKey:
							if !ecdsa.VerifyASN1(pub, d256[:], sig) {
								err = errors.New("bad ECDSA signature")
							}
						case *rsa.PublicKey:
							err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d256[:], sig)
						}
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
