package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/db"

	"github.com/imapgate/imapgate/caclient"
)

func issueTestCert(t *testing.T, c *CA) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	iss, err := c.Sign(context.Background(), SignRequest{CSR: csr, Identity: "carol@example.org"}, Requester{Subject: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return iss.Cert
}

// holdCRLLock writes the CRL lock row as another CA node would; the returned
// func releases it.
func holdCRLLock(t *testing.T, c *CA) (release func()) {
	t.Helper()
	held, _ := json.Marshal(lockValue{Owner: "another-node", Expires: time.Now().Add(time.Hour)})
	if err := c.db.Set(locksTable, crlLockKey, held); err != nil {
		t.Fatal(err)
	}
	return func() {
		free, _ := json.Marshal(lockValue{})
		if err := c.db.Set(locksTable, crlLockKey, free); err != nil {
			t.Error(err)
		}
	}
}

func crlListsSerial(t *testing.T, c *CA, serial *big.Int) (number int64, listed bool) {
	t.Helper()
	crl, err := c.CRL()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseRevocationList(crl.DER)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range parsed.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return crl.Number, true
		}
	}
	return crl.Number, false
}

// waitListed polls the CRL until it lists serial or d has passed.
func waitListed(t *testing.T, c *CA, serial *big.Int, d time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if _, ok := crlListsSerial(t, c, serial); ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestRevokeOutlivesItsRequest: another node holds the CRL lock while an admin
// revokes with a client that gives up after 300ms. The revocation is stored
// either way; the CRL must list it as soon as the lock is free, not hours
// later at the next renew_period.
func TestRevokeOutlivesItsRequest(t *testing.T) {
	c := benchCA(t)
	cert := issueTestCert(t, c)
	release := holdCRLLock(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	type result struct {
		rv  *Revoked
		err error
	}
	done := make(chan result, 1)
	go func() {
		rv, err := c.Revoke(ctx, cert.SerialNumber, 1, "lost", Requester{Subject: "test"})
		done <- result{rv, err}
	}()
	time.Sleep(time.Second)
	release()
	r := <-done
	if r.err != nil {
		t.Fatalf("revoke: %v", r.err)
	}
	num, ok := crlListsSerial(t, c, cert.SerialNumber)
	if !ok || r.rv.CRLNumber != num {
		t.Fatalf("after the lock is free: CRL %d lists the serial: %v; Revoke reported CRL %d", num, ok, r.rv.CRLNumber)
	}
}

// apiClient serves c's API over TLS on 127.0.0.1 and returns a client holding
// the credential in credDir, and the base URL.
func apiClient(t *testing.T, c *CA, credDir string) (*http.Client, string) {
	t.Helper()
	srv := NewServer(c)
	tcfg, err := srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), TLSConfig: tcfg}
	go hs.Serve(tls.NewListener(ln, tcfg))
	t.Cleanup(func() { hs.Close() })
	cert, err := tls.LoadX509KeyPair(filepath.Join(credDir, "cert.pem"), filepath.Join(credDir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.root)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}}}, "https://" + ln.Addr().String()
}

// TestRevokePendingIsPublishedBySchedule: when the CRL cannot be re-signed
// within the revocation's own wait (the lock stays held), the API says so with
// 202 and a sentence, and the schedule publishes the revocation within a
// check_interval of the lock coming free.
func TestRevokePendingIsPublishedBySchedule(t *testing.T) {
	defer func(d time.Duration) { revokeCRLWait = d }(revokeCRLWait)
	revokeCRLWait = 300 * time.Millisecond
	c := openTestCA(t, func(cfg *Config) { cfg.CRL.CheckInterval = Duration{100 * time.Millisecond} })
	cert := issueTestCert(t, c)
	hc, base := apiClient(t, c, filepath.Join(c.cfg.Dir(), AdminDir))

	release := holdCRLLock(t, c)
	body, _ := json.Marshal(RevokeRequestJSON{Serial: SerialHex(cert.SerialNumber), Reason: "keyCompromise"})
	resp, err := hc.Post(base+PathRevoke, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got RevokeResponseJSON
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !got.CRLPending || got.CRLNumber != 0 ||
		!strings.Contains(got.Note, "not on the CRL yet") || !strings.Contains(got.Note, "every 100ms") {
		t.Fatalf("revoke with the CRL lock held: %s %+v; want 202, crl_pending and a note saying when", resp.Status, got)
	}
	if _, ok := crlListsSerial(t, c, cert.SerialNumber); ok {
		t.Fatal("the CRL lists the serial although the lock was held")
	}
	// A retry is a conflict: the revocation is stored.
	resp, err = hc.Post(base+PathRevoke, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("second revoke: %s, want 409", resp.Status)
	}
	// The API client (what imapgate cert revoke prints from) reads the 202.
	cl, err := caclient.New(base, filepath.Join(c.cfg.Dir(), AdminDir))
	if err != nil {
		t.Fatal(err)
	}
	cert2 := issueTestCert(t, c)
	rv, err := cl.Revoke(context.Background(), SerialHex(cert2.SerialNumber), "superseded", "")
	if err != nil || !rv.CRLPending || rv.CRLNumber != 0 || !strings.Contains(rv.Note, "not on the CRL yet") {
		t.Fatalf("caclient revoke with the CRL lock held: %+v, %v", rv, err)
	}
	release()
	if !waitListed(t, c, cert.SerialNumber, 5*time.Second) {
		t.Fatal("5s after the lock came free (check_interval 100ms) the CRL still misses the revocation")
	}
}

// TestCRLScheduleSeesOtherNodesRevocations: another node sharing the database
// stored and counted a revocation, then went away before signing. This node's
// schedule publishes it within a check_interval; with nothing new it leaves the
// CRL alone until renew_period.
func TestCRLScheduleSeesOtherNodesRevocations(t *testing.T) {
	c := openTestCA(t, func(cfg *Config) { cfg.CRL.CheckInterval = Duration{50 * time.Millisecond} })
	first, _ := c.CRL()
	time.Sleep(300 * time.Millisecond)
	if again, _ := c.CRL(); again.Number != first.Number {
		t.Fatalf("CRL re-signed from %d to %d with nothing to publish", first.Number, again.Number)
	}
	cert := issueTestCert(t, c)
	// What the other node wrote: smallstep's revocation row, then the count.
	if err := c.db.Revoke(&db.RevokedCertificateInfo{Serial: cert.SerialNumber.String(), ReasonCode: 1,
		RevokedAt: time.Now().UTC(), ExpiresAt: cert.NotAfter, MTLS: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.noteRevocation(); err != nil {
		t.Fatal(err)
	}
	if !waitListed(t, c, cert.SerialNumber, 5*time.Second) {
		t.Fatal("the schedule did not publish another node's counted revocation")
	}
}
