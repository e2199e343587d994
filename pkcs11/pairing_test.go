package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// TestCredentialsPairByPublicKey: a certificate is a key's only when its
// public key is the key's. A prepared card (a key plus someone else's
// certificate under the same CKA_ID) has a credential with no certificate,
// so replacing it revokes nobody's certificate.
func TestCredentialsPairByPublicKey(t *testing.T) {
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			s := newSoftToken(t)
			ca := newTestCA(t)
			if _, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "alice@example.org", KeyType: kt, PIN: s.pin()}, ca.sign); err != nil {
				t.Fatal(err)
			}
			creds, err := s.tok.Credentials()
			if err != nil {
				t.Fatal(err)
			}
			if len(creds) != 1 || len(creds[0].Certs) != 1 {
				t.Fatalf("an enrolled token: credentials %v, want alice's with her certificate", creds)
			}
			// Mallory's key, and bob's certificate (another key) under its ID.
			key, err := s.tok.GenerateKey(kt, "imapgate-mallory@example.org")
			if err != nil {
				t.Fatal(err)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			bob := mustCert(t, &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "bob@example.org"},
				EmailAddresses: []string{"bob@example.org"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
				ca.inter, other.Public(), ca.interKey)
			if err := s.tok.WriteCertificate(bob, key.ID, "imapgate-mallory@example.org"); err != nil {
				t.Fatal(err)
			}
			creds, err = s.tok.Credentials()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range creds {
				for _, cert := range c.Certs {
					if cert.SerialNumber.Int64() == 4242 {
						t.Fatalf("bob's certificate was paired with mallory's key: %v", c)
					}
				}
			}
			if len(creds) != 2 {
				t.Fatalf("credentials %v, want alice's and mallory's key", creds)
			}
			res, err := s.tok.Enroll(context.Background(), EnrollRequest{User: "carol@example.org", KeyType: kt, PIN: s.pin(), Replace: true}, ca.sign)
			if err != nil {
				t.Fatal(err)
			}
			for _, old := range res.Replaced {
				if old.SerialNumber.Int64() == 4242 {
					t.Fatal("replacing the prepared card reports bob's certificate as replaced (it would be revoked)")
				}
			}
			if len(res.Replaced) != 1 {
				t.Fatalf("replaced %d certificates, want alice's", len(res.Replaced))
			}
		})
	}
}
