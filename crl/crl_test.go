package crl_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

func TestParse(t *testing.T) {
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	now := time.Now()
	pki.Revoke(big.NewInt(4242))
	good := pki.CRL(t, testenv.CRLOptions{})
	strangerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		data []byte
		want string // "" = ok
	}{
		{"good_der", good, ""},
		{"good_pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: good}), ""},
		{"wrong_pem_type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good}), "want \"X509 CRL\""},
		{"garbage", []byte("not a crl"), "crl: parse"},
		{"other_issuer", other.CRL(t, testenv.CRLOptions{}), "does not match issuer"}, // same names, other key
		{"bad_signature", pki.CRL(t, testenv.CRLOptions{Signer: strangerKey}), "does not verify"},
		{"future", pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(time.Hour), NextUpdate: now.Add(2 * time.Hour)}), "in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := crl.Parse(tc.data, pki.Intermediate, now)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !snap.Revoked(big.NewInt(4242)) || snap.Revoked(big.NewInt(4243)) || snap.Len() != 1 {
					t.Fatalf("revoked set wrong: len %d", snap.Len())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestStale(t *testing.T) {
	pki := testenv.NewPKI(t)
	now := time.Now()
	snap, err := crl.Parse(pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(-time.Hour)}), pki.Intermediate, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Stale(now, 2*time.Hour); err != nil {
		t.Fatalf("within grace: %v", err)
	}
	if err := snap.Stale(now, 30*time.Minute); !errors.Is(err, crl.ErrStale) {
		t.Fatalf("past grace: %v", err)
	}
	var none *crl.Snapshot
	if err := none.Stale(now, time.Hour); !errors.Is(err, crl.ErrStale) {
		t.Fatal("no snapshot must be stale")
	}
}

// TestStoreHTTP polls a CA-like /crl with ETags: 304s keep the snapshot, a new CRL
// replaces it and notifies subscribers, a rolled-back CRL number is refused.
func TestStoreHTTP(t *testing.T) {
	pki := testenv.NewPKI(t)
	var mu sync.Mutex
	cur := pki.CRL(t, testenv.CRLOptions{})
	etag := `"1"`
	var hits, notModified atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits.Add(1)
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(cur)
	}))
	defer srv.Close()
	set := func(der []byte, tag string) {
		mu.Lock()
		cur, etag = der, tag
		mu.Unlock()
	}

	store, err := crl.NewStore(crl.Options{URL: srv.URL + "/crl", Issuer: pki.Intermediate, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Fresh(time.Now()); !errors.Is(err, crl.ErrStale) {
		t.Fatalf("fresh before any load: %v", err)
	}
	var got []*crl.Snapshot
	store.Subscribe(func(s *crl.Snapshot) { got = append(got, s) })
	ctx := context.Background()
	if changed, err := store.Refresh(ctx); err != nil || !changed {
		t.Fatalf("first refresh: %v %v", changed, err)
	}
	if changed, err := store.Refresh(ctx); err != nil || changed || notModified.Load() != 1 {
		t.Fatalf("second refresh: changed=%v err=%v 304s=%d", changed, err, notModified.Load())
	}
	pki.Revoke(big.NewInt(77))
	set(pki.CRL(t, testenv.CRLOptions{}), `"2"`)
	if changed, err := store.Refresh(ctx); err != nil || !changed {
		t.Fatalf("third refresh: %v %v", changed, err)
	}
	if len(got) != 2 || !got[1].Revoked(big.NewInt(77)) || store.Load() != got[1] {
		t.Fatalf("subscribers saw %d snapshots", len(got))
	}
	if _, err := store.Fresh(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Fresh(time.Now().Add(2 * time.Hour)); !errors.Is(err, crl.ErrStale) {
		t.Fatalf("max_age not enforced: %v", err)
	}
	// An old CRL (lower number) served again is refused; the current one stays.
	set(pki.CRL(t, testenv.CRLOptions{Number: big.NewInt(1)}), `"old"`)
	if _, err := store.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "older than the current") {
		t.Fatalf("rollback: %v", err)
	}
	if !store.Load().Revoked(big.NewInt(77)) {
		t.Fatal("rollback replaced the snapshot")
	}
	// Server errors keep the snapshot.
	srv.Close()
	if _, err := store.Refresh(ctx); err == nil {
		t.Fatal("refresh against a closed server succeeded")
	}
	if !store.Load().Revoked(big.NewInt(77)) {
		t.Fatal("error replaced the snapshot")
	}
}

func TestStoreFileAndRun(t *testing.T) {
	pki := testenv.NewPKI(t)
	path := filepath.Join(t.TempDir(), "ca.crl")
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan *crl.Snapshot, 4)
	store.Subscribe(func(s *crl.Snapshot) { updates <- s })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { store.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-updates
	pki.Revoke(big.NewInt(99))
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
	select {
	case s := <-updates:
		if !s.Revoked(big.NewInt(99)) {
			t.Fatal("new CRL lacks the revocation")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("file change not picked up")
	}
}

func TestNewStoreValidation(t *testing.T) {
	_, err := crl.NewStore(crl.Options{URL: "ftp://x", File: "/y", Interval: -1})
	for _, want := range []string{"exactly one of url and file", "want http(s)", "no issuer", "must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// BenchmarkParse100k: verifying and indexing a CRL of 100,000 entries (a reload).
func BenchmarkParse100k(b *testing.B) {
	pki := testenv.NewPKI(b)
	der := pki.CRL(b, testenv.CRLOptions{Extra: 100_000})
	b.SetBytes(int64(len(der)))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := crl.Parse(der, pki.Intermediate, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/reload")
	b.ReportMetric(float64(len(der))/1e6, "MB-DER")
}
