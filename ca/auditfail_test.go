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
	// failOK refuses only the entries that finish an operation (result ok),
	// after its pending entry and its record are stored.
	failOK atomic.Bool
}

func (d *auditFailDB) Set(bucket, key, value []byte) error {
	if bytes.Equal(bucket, auditTable) && (d.fail.Load() || d.failOK.Load() && bytes.Contains(value, []byte(`"result":"ok"`))) {
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
	// The record is stored and the audit entry that finishes the issuance is
	// not: the record is taken back, from the table and from the index.
	fdb.failOK.Store(true)
	if iss, err := c.Sign(ctx, SignRequest{CSR: csr, Identity: "kim@example.org"}, by); !errors.Is(err, ErrAudit) || iss != nil {
		t.Fatalf("sign whose last audit entry fails: %v, %v; want ErrAudit and nothing", iss, err)
	}
	fdb.failOK.Store(false)
	if p, err := c.SearchPage(CertQuery{User: "kim@example.org"}); err != nil || len(p.Certs) != 1 {
		t.Fatalf("a search for kim: %d (%v), want the one issued with a working trail", len(p.Certs), err)
	}
	if n := len(c.certIx.byUser[foldUser("kim@example.org")]); n != 1 {
		t.Errorf("the index holds %d of kim's records, want 1", n)
	}
	list, err := c.List("kim@example.org")
	if err != nil || len(list) != 1 {
		t.Fatalf("records for kim: %d (%v), want the one issued with a working trail", len(list), err)
	}
	entries, _ := c.Audit(AuditQuery{User: "kim@example.org"})
	oks := 0
	for _, e := range entries {
		if e.Result == resultOK {
			oks++
		}
	}
	if oks != 1 || entries[len(entries)-1].Result != resultOK {
		t.Errorf("trail for kim: %+v, want the one ok issuance (and the last issuance's entry not ok)", entries)
	}
}
