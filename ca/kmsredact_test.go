package ca

import (
	"context"
	"strings"
	"testing"
)

// TestKMSErrorHidesPIN: a kms URI that cannot be used is quoted back by the
// kms package; the PIN in it must not reach the error (and so the log).
func TestKMSErrorHidesPIN(t *testing.T) {
	cfg := DefaultConfig()
	for _, uri := range []string{
		"pkcs11:token=x;pin-value=S3cr3tPIN;%zz",
		"pkcs11:module-path=/nonexistent/libsofthsm2.so;token=x;pin-value=S3cr3tPIN",
	} {
		cfg.Keys.KMS = uri
		_, _, err := loadIntermediateKey(context.Background(), cfg)
		if err == nil || strings.Contains(err.Error(), "S3cr3tPIN") || !strings.Contains(err.Error(), "REDACTED") {
			t.Errorf("kms %q: %v", uri, err)
		}
	}
}
