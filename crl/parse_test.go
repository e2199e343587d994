package crl

import (
	"encoding/pem"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestPEMDecode: input that is one DER element is DER, even with a PEM block inside it;
// anything else goes to pem.Decode, PEM text that opens with "0" included.
func TestPEMDecode(t *testing.T) {
	block := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{0x30, 0}})
	der := func(content []byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
		return b.BytesOrPanic()
	}
	for _, tc := range []struct {
		name string
		data []byte
		pem  bool
	}{
		{"der", der(make([]byte, 300)), false},
		{"der_holding_pem", der(block), false},
		{"pem", block, true},
		{"pem_after_text", append([]byte("0 comment\n"), block...), true},
		{"der_then_pem", append(append(der(nil), '\n'), block...), true},
		{"garbage", []byte("0\x82xyz"), false},
	} {
		got, _ := pemDecode(tc.data)
		if (got != nil) != tc.pem {
			t.Errorf("%s: PEM block %v, want %v", tc.name, got != nil, tc.pem)
		}
	}
}
