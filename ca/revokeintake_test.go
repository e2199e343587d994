package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// selfSigned is a certificate for the revocation intake (which does not
// check who signed it: RevokeCertificate does).
func selfSigned(t testing.TB, serial int64) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1)}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestRevokeIntake(t *testing.T) {
	cert := selfSigned(t, 0xA1DE)
	tests := []struct {
		name string
		req  RevokeRequestJSON
		// want is the serial read, or a piece of the refusal.
		want string
		ok   bool
	}{
		{"serial", RevokeRequestJSON{Serial: "a1:de", Reason: "keyCompromise"}, "A1DE", true},
		{"certificate", RevokeRequestJSON{Certificate: cert}, "A1DE", true},
		{"certificate and its serial", RevokeRequestJSON{Certificate: cert, Serial: "0xA1DE"}, "A1DE", true},
		{"forced serial", RevokeRequestJSON{Serial: "01", ForceUnknownSerial: true}, "01", true},
		{"nothing", RevokeRequestJSON{}, "serial", false},
		{"forced without serial", RevokeRequestJSON{ForceUnknownSerial: true}, "serial", false},
		{"certificate and another serial", RevokeRequestJSON{Certificate: cert, Serial: "01"}, "is not the certificate's serial", false},
		{"certificate and force", RevokeRequestJSON{Certificate: cert, ForceUnknownSerial: true}, "not both", false},
		{"not PEM", RevokeRequestJSON{Certificate: "hello"}, "not PEM", false},
		{"a CSR, not a certificate", RevokeRequestJSON{Certificate: "-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"}, "not PEM", false},
		{"garbage DER", RevokeRequestJSON{Certificate: "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"}, "does not parse", false},
		{"bad reason", RevokeRequestJSON{Serial: "01", Reason: "certificateHold"}, "reason", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := json.Marshal(tt.req)
			got, err := parseRevokeRequest(strings.NewReader(string(b)))
			switch {
			case tt.ok && (err != nil || got.serialHex() != tt.want):
				t.Fatalf("got serial %q, %v; want %s", got.serialHex(), err, tt.want)
			case !tt.ok && (err == nil || !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v; want a bad request saying %q", err, tt.want)
			case tt.ok && (got.cert != nil) != (tt.req.Certificate != ""):
				t.Fatalf("certificate read: %v, given: %v", got.cert != nil, tt.req.Certificate != "")
			}
		})
	}
}

// FuzzRevokeIntake: whatever the body, the revocation intake never panics
// and refuses only with a bad-request error.
func FuzzRevokeIntake(f *testing.F) {
	f.Add([]byte(`{"serial":"A1DE","reason":"keyCompromise"}`))
	f.Add([]byte(`{"serial":"01","force_unknown_serial":true}`))
	b, _ := json.Marshal(RevokeRequestJSON{Certificate: selfSigned(f, 7)})
	f.Add(b)
	f.Add([]byte(`{"certificate":"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseRevokeRequest(strings.NewReader(string(body)))
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Fatalf("revocation intake error is not a bad request: %v", err)
		}
		if err == nil && req.serial == nil {
			t.Fatal("accepted without a serial")
		}
	})
}
