package crl_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// FuzzParse feeds raw bytes — what a CRL URL or file delivers — to Parse: it must not
// panic, and what it accepts must answer lookups consistently.
func FuzzParse(f *testing.F) {
	pki := testenv.NewPKI(f)
	pki.Revoke(big.NewInt(4242))
	good := pki.CRL(f, testenv.CRLOptions{})
	f.Add(good)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: good}))
	small, _ := caFormatCRL(f, pki, caFormat{Entries: 3})
	f.Add(small)
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := crl.Parse(data, pki.Intermediate, time.Now())
		if err != nil {
			return
		}
		if snap.Len() < 0 || snap.NextUpdate.IsZero() || snap.Revoked(nil) {
			t.Fatalf("accepted a CRL with len %d, nextUpdate %v", snap.Len(), snap.NextUpdate)
		}
	})
}

// FuzzParseDifferential fuzzes the part of a CRL a forger cannot reach — what follows
// a valid signature — by signing whatever TBSCertList the fuzzer makes with the
// issuer's key. Whatever Parse accepts, x509.ParseRevocationList must accept and read
// the same way: same number and dates, same set of serials.
func FuzzParseDifferential(f *testing.F) {
	pki := testenv.NewPKI(f)
	pki.Revoke(big.NewInt(4242))
	pki.Revoke(big.NewInt(-5))
	for _, der := range [][]byte{pki.CRL(f, testenv.CRLOptions{}), pki.CRL(f, testenv.CRLOptions{Extra: 5}), unnumberedCRL(f, pki)} {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rl.RawTBSRevocationList)
	}
	small, _ := caFormatCRL(f, pki, caFormat{Entries: 4})
	rl, err := x509.ParseRevocationList(small)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rl.RawTBSRevocationList)
	f.Fuzz(func(t *testing.T, tbs []byte) {
		h := sha256.Sum256(tbs)
		sig, err := pki.InterKey.Sign(rand.Reader, h[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(tbs)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier([]int{1, 2, 840, 10045, 4, 3, 2})
			})
			b.AddASN1BitString(sig)
		})
		der, err := b.Bytes()
		if err != nil {
			return
		}
		snap, err := crl.Parse(der, pki.Intermediate, time.Now())
		if err != nil {
			return
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("Parse accepted what x509 refuses: %v", err)
		}
		if err := rl.CheckSignatureFrom(pki.Intermediate); err != nil {
			t.Fatalf("Parse accepted a signature x509 refuses: %v", err)
		}
		if (rl.Number == nil) != (snap.Number == nil) || rl.Number != nil && rl.Number.Cmp(snap.Number) != 0 {
			t.Fatalf("number %v, x509 reads %v", snap.Number, rl.Number)
		}
		if !rl.ThisUpdate.Equal(snap.ThisUpdate) || !rl.NextUpdate.Equal(snap.NextUpdate) {
			t.Fatalf("dates %v–%v, x509 reads %v–%v", snap.ThisUpdate, snap.NextUpdate, rl.ThisUpdate, rl.NextUpdate)
		}
		distinct := map[string]bool{}
		for _, e := range rl.RevokedCertificateEntries {
			distinct[e.SerialNumber.String()] = true
			if !snap.Revoked(e.SerialNumber) {
				t.Fatalf("serial %s listed, not found", e.SerialNumber)
			}
			if p := new(big.Int).Add(e.SerialNumber, big.NewInt(1)); !snap.Revoked(p) && distinct[p.String()] {
				t.Fatalf("serial %s listed, not found", p)
			}
		}
		if snap.Len() != len(distinct) {
			t.Fatalf("%d serials, x509 reads %d distinct", snap.Len(), len(distinct))
		}
		// The same CRL again after itself, twice: sharing the first one's index (see
		// reuse.go), the same serials each time.
		prev := snap
		for _, reuse := range []bool{true, true} {
			again, err := crl.ParseAfter(der, pki.Intermediate, time.Now(), prev)
			if err != nil {
				t.Fatalf("again after itself: %v", err)
			}
			if again.Len() != snap.Len() || crl.IndexReused(again) != (reuse && len(distinct) > 0) {
				t.Fatalf("again after itself: %d serials, reused %v", again.Len(), crl.IndexReused(again))
			}
			for _, e := range rl.RevokedCertificateEntries {
				if !again.Revoked(e.SerialNumber) {
					t.Fatalf("again: serial %s listed, not found", e.SerialNumber)
				}
			}
			prev = again
		}
	})
}
