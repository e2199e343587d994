package ca

import (
	"context"
	"errors"
	"math/big"
	"testing"
)

// TestRevokeLookupErrors: only a serial the database does not hold is "not
// found" (404); a row that cannot be read is an error of the CA (500), not a
// claim that the certificate was never issued.
func TestRevokeLookupErrors(t *testing.T) {
	c := benchCA(t)
	ctx := context.Background()
	by := Requester{Subject: "test"}
	if _, err := c.Revoke(ctx, big.NewInt(424242), 0, "", by); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke of a serial never issued: %v, want ErrNotFound", err)
	}
	// A damaged row under an issued serial (smallstep's x509_certs holds the DER).
	if err := c.db.Set([]byte("x509_certs"), []byte("434343"), []byte("not DER")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Revoke(ctx, big.NewInt(434343), 0, "", by)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("revoke of a serial whose row cannot be read: %v, want an error that is not ErrNotFound", err)
	}
	if _, err := c.Certificate(big.NewInt(434343)); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Certificate of a serial whose row cannot be read: %v, want an error that is not ErrNotFound", err)
	}
}
