package main

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stack     []string
		class, op string
	}{
		{"good_x25519", []string{"crypto/internal/fips140/edwards25519/field.feSquare", "crypto/ecdh.x25519ScalarMult", "crypto/tls.(*ecdhKeyExchange).serverSharedSecret"}, "crypto primitives", "key exchange (X25519)"},
		{"good_server_sign", []string{"p256MulInternal", "crypto/ecdsa.SignASN1", "crypto/tls.(*serverHandshakeStateTLS13).sendServerCertificate"}, "crypto primitives", "server signature (CertificateVerify, ECDSA P-256 sign)"},
		{"good_client_verify", []string{"p256MulInternal", "crypto/ecdsa.VerifyASN1", "crypto/tls.(*serverHandshakeStateTLS13).readClientCertificate"}, "crypto primitives", "client signature check (CertificateVerify verify)"},
		{"good_preempted_crypto", []string{"runtime.asyncPreempt", "crypto/internal/fips140/sha256.blockSHANI", "crypto/internal/fips140/hkdf.Expand"}, "crypto primitives", "key schedule and transcript hashes (HKDF, HMAC, SHA-2)"},
		{"good_cryptobyte_is_parsing", []string{"vendor/golang.org/x/crypto/cryptobyte.(*String).ReadASN1", "crypto/x509.parseCertificate"}, "certificate parsing and chain building (crypto/x509, asn1)", ""},
		{"good_syscall", []string{"internal/runtime/syscall/linux.Syscall6", "syscall.write"}, "system calls, network polling", ""},
		{"good_logging", []string{"runtime.memmove", "log/slog.(*Logger).log"}, "logging (log/slog)", ""},
		{"good_gc", []string{"runtime.scanobject", "runtime.gcBgMarkWorker"}, "GC", ""},
		{"good_front", []string{"github.com/imapgate/imapgate/mtls.readLine"}, "front code (mtls, crl)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			class, op := classify(tc.stack)
			if class != tc.class || op != tc.op {
				t.Fatalf("classify = %q, %q; want %q, %q", class, op, tc.class, tc.op)
			}
		})
	}
}

func TestParse(t *testing.T) {
	in := `File: frontprof
Type: cpu
-----------+-------------------------------------------------------
      20ms   runtime.futex
             runtime.futexsleep
-----------+-------------------------------------------------------
         key:value
      10ms   p256MulInternal
             crypto/ecdsa.SignASN1
-----------+-------------------------------------------------------
`
	got, err := parse(bufio.NewScanner(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].value != 20*time.Millisecond || len(got[0].stack) != 2 || got[1].stack[1] != "crypto/ecdsa.SignASN1" {
		t.Fatalf("parse = %+v", got)
	}
}
