package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/smallstep/nosql"
)

// auditFailDB refuses writes to the audit table while fail is set, as a
// full disk or a lost database connection would.
type auditFailDB struct {
	nosql.DB
	fail atomic.Bool
}

func (d *auditFailDB) Set(bucket, key, value []byte) error {
	if d.fail.Load() && bytes.Equal(bucket, auditTable) {
		return errors.New("disk full (test)")
	}
	return d.DB.Set(bucket, key, value)
}

// TestAuditWriteFailureFailsTheOperation: an issuance or a revocation
// whose audit entry cannot be written is not done — no record, no
// certificate handed out, no revocation.
func TestAuditWriteFailureFailsTheOperation(t *testing.T) {
	c := openTestCA(t, nil)
	fdb := &auditFailDB{DB: c.db.DB}
	c.db.DB = fdb
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "kim@example.org"}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	ctx := context.Background()
	by := Requester{Subject: "test"}

	ok, err := c.Sign(ctx, SignRequest{CSR: csr, Identity: "kim@example.org"}, by)
	if err != nil {
		t.Fatal(err)
	}
	fdb.fail.Store(true)
	if iss, err := c.Sign(ctx, SignRequest{CSR: csr, Identity: "kim@example.org"}, by); !errors.Is(err, ErrAudit) || iss != nil {
		t.Fatalf("sign without an audit trail: %v, %v; want ErrAudit and nothing", iss, err)
	}
	if _, err := c.IssueServer(ctx, ServerRequest{CSR: csr, DNS: nil}, by); err == nil {
		t.Fatal("server issuance without names succeeded")
	}
	if _, err := c.Revoke(ctx, ok.Cert.SerialNumber, 1, "", by); !errors.Is(err, ErrAudit) {
		t.Fatalf("revoke without an audit trail: %v, want ErrAudit", err)
	}
	if rev, _ := c.IsRevoked(ok.Cert); rev {
		t.Error("the certificate was revoked though its audit entry could not be written")
	}
	fdb.fail.Store(false)
	list, err := c.List("kim@example.org")
	if err != nil || len(list) != 1 {
		t.Fatalf("records for kim: %d (%v), want the one issued with a working trail", len(list), err)
	}
	entries, _ := c.Audit(AuditQuery{User: "kim@example.org"})
	if len(entries) != 1 || entries[0].Result != resultOK {
		t.Errorf("trail for kim: %+v, want the one ok issuance", entries)
	}
}
