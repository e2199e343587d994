package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

// csrWith makes a CSR (CN and e-mail gina@example.org, or the given DNS
// names) carrying extra extensions.
func csrWith(t testing.TB, dns []string, exts ...pkix.Extension) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{ExtraExtensions: exts}
	if dns == nil {
		tmpl.Subject.CommonName, tmpl.EmailAddresses = "gina@example.org", []string{"gina@example.org"}
	} else {
		tmpl.DNSNames = dns
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upnSAN is a subjectAltName with an otherName UPN (as Windows logon
// certificates carry) beside the user's e-mail.
func upnSAN(t testing.TB, upn string) pkix.Extension {
	utf8 := mustMarshal(t, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(upn)})
	other := mustMarshal(t, struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue `asn1:"tag:0,explicit"`
	}{asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}, asn1.RawValue{FullBytes: utf8}})
	other[0] = 0xa0 // [0] IMPLICIT: the otherName choice of GeneralName
	email := mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte("gina@example.org")})
	seq := mustMarshal(t, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: append(other, email...)})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: seq}
}

func basicConstraints(t testing.TB, isCA, critical bool) pkix.Extension {
	v := mustMarshal(t, struct {
		IsCA bool `asn1:"optional"`
	}{isCA})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: critical, Value: v}
}

// TestCSRExtensionsRefused: a CSR asking for a UPN, for CA:TRUE or with a
// critical extension the CA does not know gets a 400 naming it, nothing is
// stored, and the refusal is in the audit trail with who asked and why.
func TestCSRExtensionsRefused(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	unknown := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4, 5}, Critical: true, Value: []byte{0x05, 0x00}}
	policies := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 32}, Critical: true, Value: mustMarshal(t, []asn1.ObjectIdentifier{{2, 5, 29, 32, 0}})}
	before, _ := c.CA.List("")
	for _, tt := range []struct {
		name string
		ext  pkix.Extension
		want string
	}{
		{"otherName UPN", upnSAN(t, "administrator@corp.example.org"), "otherName"},
		{"critical CA:TRUE", basicConstraints(t, true, true), "CA:TRUE"},
		{"non-critical CA:TRUE", basicConstraints(t, true, false), "CA:TRUE"},
		{"unknown critical extension", unknown, "1.2.3.4.5"},
		{"critical certificatePolicies", policies, "certificatePolicies"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ae *caclient.Error
			_, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrWith(t, nil, tt.ext), User: "gina@example.org"})
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, tt.want) {
				t.Errorf("sign: %v, want 400 naming %q", err, tt.want)
			}
			_, err = admin.SignServer(ctx, caclient.ServerRequest{CSR: csrWith(t, []string{"mail.example.org"}, tt.ext), DNS: []string{"mail.example.org"}})
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, tt.want) {
				t.Errorf("server: %v, want 400 naming %q", err, tt.want)
			}
		})
	}
	// A non-critical CA:FALSE and a critical keyUsage are what tools send: accepted.
	ku := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: []byte{0x03, 0x02, 0x07, 0x80}}
	if _, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrWith(t, nil, basicConstraints(t, false, true), ku), User: "gina@example.org"}); err != nil {
		t.Errorf("CA:FALSE and keyUsage: %v", err)
	}
	after, _ := c.CA.List("")
	if len(after) != len(before)+1 {
		t.Errorf("%d certificates stored, want only the accepted one", len(after)-len(before))
	}
	entries, err := admin.Audit(ctx, caclient.AuditQuery{User: "gina@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	var refused int
	for _, e := range entries {
		if e.Action == "issue" && e.Result == "refused" && strings.Contains(e.Actor, "test help desk") && e.Role == "enroll" && strings.Contains(e.Reason, "CSR") {
			refused++
		}
	}
	if refused != 5 {
		t.Errorf("%d refused issuances for gina in the audit trail, want 5: %+v", refused, entries)
	}
}

// TestAgentSeesUserCertificatesOnly: an enrollment agent lists (and reads
// the audit trail of) user certificates only; an admin sees the roles', the
// servers' and the CA's own TLS certificate too.
func TestAgentSeesUserCertificatesOnly(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	if _, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "ida@example.org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SignServer(ctx, caclient.ServerRequest{CSR: serverCSR(t, "", []string{"mail.example.org"}, nil, nil), DNS: []string{"mail.example.org"}}); err != nil {
		t.Fatal(err)
	}
	kinds := func(certs []caclient.Cert) []string {
		var k []string
		for _, c := range certs {
			if !slices.Contains(k, c.Kind) {
				k = append(k, c.Kind)
			}
		}
		slices.Sort(k)
		return k
	}
	agentList, err := enroll.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(agentList); !slices.Equal(got, []string{"user"}) {
		t.Errorf("an agent lists kinds %v, want user only", got)
	}
	adminList, err := admin.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(adminList); !slices.Equal(got, []string{"ca-tls", "role", "server", "user"}) {
		t.Errorf("an admin lists kinds %v", got)
	}
	agentAudit, err := enroll.Audit(ctx, caclient.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range agentAudit {
		if e.Kind != "user" {
			t.Errorf("an agent reads an audit entry about a %q certificate: %+v", e.Kind, e)
		}
	}
}

// TestCATLSCertificateRecorded: the CA's own HTTPS certificate is listed
// like any other (server profile, kind ca-tls) and can be revoked; the CA
// then serves a new one.
func TestCATLSCertificateRecorded(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	admin := client(t, c, c.AdminCred)
	served := func() *x509.Certificate {
		pool := x509.NewCertPool()
		pool.AddCert(c.Root)
		conn, err := tls.Dial("tcp", strings.TrimPrefix(c.URL, "https://"), &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	leaf := served()
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("the CA's TLS certificate: basicConstraints valid=%v CA=%v, want CA:FALSE", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	serial := ca.SerialHex(leaf.SerialNumber)
	list, err := admin.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list, func(x caclient.Cert) bool { return x.Serial == serial && x.Kind == "ca-tls" }) {
		t.Fatalf("the CA's TLS certificate %s is not listed as kind ca-tls", serial)
	}
	if _, err := admin.Revoke(ctx, serial, "superseded", "test"); err != nil {
		t.Fatalf("revoke the CA's TLS certificate: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for ca.SerialHex(served().SerialNumber) == serial {
		if time.Now().After(deadline) {
			t.Fatal("the CA still serves its revoked TLS certificate after 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := caclient.New(c.URL, c.AdminCred); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.List(ctx, ""); err != nil {
		t.Errorf("the API after the renewal: %v", err)
	}
}

// TestAuditAPI: the trail records issuance and revocation with their
// result, a help desk's own actions with its identity as actor, and refuses
// a reported entry that would read as the CA's own or forge a log line.
func TestAuditAPI(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	iss, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "jo@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Revoke(ctx, iss.Serial, "keyCompromise", "card lost"); err != nil {
		t.Fatal(err)
	}
	if err := enroll.RecordAudit(ctx, caclient.AuditEntry{Action: "pin-change", User: "jo@example.org", TokenSerial: "b125a5c58e237acc", Serial: iss.Serial}); err != nil {
		t.Fatal(err)
	}
	entries, err := admin.Audit(ctx, caclient.AuditQuery{Serial: iss.Serial})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]func(caclient.AuditEntry) bool{
		"issue": func(e caclient.AuditEntry) bool {
			return e.Result == "ok" && e.User == "jo@example.org" && strings.Contains(e.Actor, "test help desk")
		},
		"revoke": func(e caclient.AuditEntry) bool {
			return e.Result == "ok" && e.Role == "admin" && strings.Contains(e.Reason, "card lost")
		},
		"pin-change": func(e caclient.AuditEntry) bool {
			return e.Reported && e.TokenSerial == "b125a5c58e237acc" && e.Role == "enroll"
		},
	}
	for _, e := range entries {
		if ok := want[e.Action]; ok != nil && ok(e) {
			delete(want, e.Action)
		}
	}
	if len(want) > 0 {
		t.Errorf("the trail for %s lacks %v: %+v", iss.Serial, want, entries)
	}
	if len(entries) < 2 || entries[0].Time.Before(entries[len(entries)-1].Time) {
		t.Errorf("entries not newest first: %+v", entries)
	}
	if one, err := admin.Audit(ctx, caclient.AuditQuery{Limit: 1}); err != nil || len(one) != 1 {
		t.Errorf("limit 1: %d entries, %v", len(one), err)
	}
	var ae *caclient.Error
	for _, bad := range []caclient.AuditEntry{
		{Action: "revoke", User: "jo@example.org"},
		{Action: "issue-forged"},
		{Action: "wipe", Reason: "ok\n{\"msg\":\"forged\"}"},
		{Action: "Wipe Now"},
		{Action: "wipe", Result: "maybe"},
		{Action: "wipe", User: "not an address"},
	} {
		if err := enroll.RecordAudit(ctx, bad); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Errorf("RecordAudit(%+v) = %v, want 400", bad, err)
		}
	}
	// A user certificate may not read the trail; an agent may not read admins'.
	if _, err := admin.Audit(ctx, caclient.AuditQuery{Limit: 5000}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("limit 5000: %v, want 400", err)
	}
}
