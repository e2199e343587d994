package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkKeyGen measures C_GenerateKeyPair of a token key pair on
// SoftHSM2 (file backend: it writes two object files). A real card is far
// slower; the figure bounds what the software costs.
func BenchmarkKeyGen(b *testing.B) {
	for _, kt := range []KeyType{KeyECP256, KeyRSA2048} {
		b.Run(string(kt), func(b *testing.B) {
			s := newSoftToken(b)
			if err := s.tok.Login(s.pin()); err != nil {
				b.Fatal(err)
			}
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				k, err := s.tok.GenerateKey(kt, "imapgate-bench")
				total += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if _, err := s.tok.DeleteID(k.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/keygen")
		})
	}
}

// BenchmarkSign measures one signature on the token against the same
// signature in Go software, measured in the same run as the baseline.
func BenchmarkSign(b *testing.B) {
	digest := sha256.Sum256([]byte("imapgate"))
	ecSoft, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaSoft, _ := rsa.GenerateKey(rand.Reader, 2048)
	pss := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
	cases := []struct {
		name string
		kt   KeyType
		soft crypto.Signer
		opts crypto.SignerOpts
	}{
		{"ec-p256", KeyECP256, ecSoft, crypto.SHA256},
		{"rsa-2048-pkcs1", KeyRSA2048, rsaSoft, crypto.SHA256},
		{"rsa-2048-pss", KeyRSA2048, rsaSoft, pss},
	}
	s := newSoftToken(b)
	if err := s.tok.Login(s.pin()); err != nil {
		b.Fatal(err)
	}
	keys := map[KeyType]*Signer{}
	for _, c := range cases {
		if keys[c.kt] == nil {
			k, err := s.tok.GenerateKey(c.kt, "imapgate-bench")
			if err != nil {
				b.Fatal(err)
			}
			keys[c.kt] = k.Signer()
		}
	}
	for _, c := range cases {
		for _, side := range []struct {
			name string
			sg   crypto.Signer
		}{{"token", keys[c.kt]}, {"software", c.soft}} {
			b.Run(c.name+"/"+side.name, func(b *testing.B) {
				start := time.Now()
				for i := 0; i < b.N; i++ {
					if _, err := side.sg.Sign(rand.Reader, digest[:], c.opts); err != nil {
						b.Fatal(err)
					}
				}
				per := time.Since(start) / time.Duration(b.N)
				b.ReportMetric(float64(per.Nanoseconds())/1000, "µs/sign")
				b.ReportMetric(float64(time.Second)/float64(per), "signs/s")
			})
		}
	}
}
