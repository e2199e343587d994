package crl_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/imapgate/imapgate/testenv"
)

// caFormat describes a CRL shaped the way imapgate's CA writes one with
// x509.CreateRevocationList: smallstep's 128-bit random serials (16 or 17 bytes of
// INTEGER), a UTCTime revocation date and a reasonCode on every entry, a CRL number and
// the authority key id. That is about 50 bytes an entry, so a million entries are 50 MB.
type caFormat struct {
	Entries int
	Number  int64
	Signer  crypto.Signer // default: the intermediate's key (another key makes a forgery)
	Seed    uint64        // serials are drawn from a ChaCha8 stream with this seed
	// RevokedAt is every entry's revocation date; default an hour ago. Two CRLs of the
	// same Seed and RevokedAt list the same entries byte for byte (a re-signed CRL).
	RevokedAt time.Time
	// Edit, when set, changes the drawn serials before they are written.
	Edit func([]*big.Int) []*big.Int
}

// caFormatCRL builds such a CRL directly with cryptobyte and signs it with ECDSA-SHA256
// (testenv's keys are P-256): CreateRevocationList takes 12 s and a gigabyte for a
// million entries, this about a second. It returns the DER and the serials it lists.
func caFormatCRL(tb testing.TB, pki *testenv.PKI, o caFormat) ([]byte, []*big.Int) {
	tb.Helper()
	if o.Signer == nil {
		o.Signer = pki.InterKey
	}
	if o.Number == 0 {
		o.Number = 1
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], o.Seed)
	rng := mrand.New(mrand.NewChaCha8(seed))
	now := time.Now().UTC().Truncate(time.Second)
	sigAlg := func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2})
		})
	}
	if o.RevokedAt.IsZero() {
		o.RevokedAt = now.Add(-time.Hour)
	}
	serials := make([]*big.Int, 0, o.Entries)
	var raw [16]byte
	for range o.Entries {
		for i := 0; i < 16; i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				raw[i+j] = byte(v >> (8 * j))
			}
		}
		serials = append(serials, new(big.Int).SetBytes(raw[:]))
	}
	if o.Edit != nil {
		serials = o.Edit(serials)
	}
	var tbs cryptobyte.Builder
	tbs.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1)
		sigAlg(b)
		b.AddBytes(pki.Intermediate.RawSubject)
		b.AddASN1UTCTime(now.Add(-time.Minute))
		b.AddASN1UTCTime(now.Add(time.Hour))
		if len(serials) > 0 {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, serial := range serials {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1BigInt(serial)
						b.AddASN1UTCTime(o.RevokedAt)
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{2, 5, 29, 21})
								b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
									b.AddASN1Enum(4) // superseded
								})
							})
						})
					})
				}
			})
		}
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{2, 5, 29, 35})
					b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) {
								b.AddBytes(pki.Intermediate.SubjectKeyId)
							})
						})
					})
				})
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{2, 5, 29, 20})
					b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1Int64(o.Number)
					})
				})
			})
		})
	})
	tbsDER, err := tbs.Bytes()
	if err != nil {
		tb.Fatalf("build CRL: %v", err)
	}
	h := sha256.Sum256(tbsDER)
	sig, err := o.Signer.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		tb.Fatalf("sign CRL: %v", err)
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbsDER)
		sigAlg(b)
		b.AddASN1BitString(sig)
	})
	der, err := out.Bytes()
	if err != nil {
		tb.Fatalf("build CRL: %v", err)
	}
	return der, serials
}

// bigCRLs caches the large CRLs of the benchmarks: Go runs a benchmark function once
// with b.N = 1 before the measured run, and building a million entries twice is slow.
// All list their entries as revoked at one time, so that CRLs of one size and two
// numbers are one CRL re-signed.
var bigCRLs struct {
	sync.Mutex
	pki *testenv.PKI
	at  time.Time
	der map[[2]int][]byte
}

func cachedCRL(b *testing.B, entries int) (*x509.Certificate, []byte) {
	return cachedCRLNumber(b, entries, 1)
}

// cachedCRLNumber is the CRL of cachedCRL(b, entries) re-signed with CRL number number.
func cachedCRLNumber(b *testing.B, entries, number int) (*x509.Certificate, []byte) {
	bigCRLs.Lock()
	defer bigCRLs.Unlock()
	if bigCRLs.pki == nil {
		bigCRLs.pki = testenv.NewPKI(b)
		bigCRLs.at = time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
		bigCRLs.der = map[[2]int][]byte{}
	}
	k := [2]int{entries, number}
	if bigCRLs.der[k] == nil {
		bigCRLs.der[k], _ = caFormatCRL(b, bigCRLs.pki, caFormat{Entries: entries, Seed: uint64(entries), Number: int64(number), RevokedAt: bigCRLs.at})
	}
	return bigCRLs.pki.Intermediate, bigCRLs.der[k]
}
