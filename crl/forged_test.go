package crl_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestParseForgedBoundedHeap: a forged CRL is refused before its entries are parsed, so
// refusing one costs no allocation that grows with it — the 13.6 MB forgery of issue 8
// took 260 MB of heap when x509 parsed it whole first. A CRL of the same size that the
// issuer did sign is indexed in about 40 bytes an entry (the index), not in the
// ~400 bytes of x509.RevocationList, and its parse allocates no more than 64.
func TestParseForgedBoundedHeap(t *testing.T) {
	pki := testenv.NewPKI(t)
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const entries = 280_000 // 13.9 MB in the CA's format
	forged, _ := caFormatCRL(t, pki, caFormat{Entries: entries, Signer: stranger})
	good, serials := caFormatCRL(t, pki, caFormat{Entries: entries, Seed: 1})
	if len(forged) < 13<<20 {
		t.Fatalf("forged CRL is only %d bytes", len(forged))
	}
	// allocated is what Parse allocated in all, and what of it the snapshot keeps.
	allocated := func(data []byte) (total, kept uint64, snap *crl.Snapshot, err error) {
		var before, after, gced runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		snap, err = crl.Parse(data, pki.Intermediate, time.Now())
		runtime.ReadMemStats(&after)
		runtime.GC()
		runtime.ReadMemStats(&gced)
		runtime.KeepAlive(data) // else the second GC frees it, and kept is short of it
		return after.TotalAlloc - before.TotalAlloc, gced.HeapAlloc - min(before.HeapAlloc, gced.HeapAlloc), snap, err
	}
	n, _, _, err := allocated(forged)
	if err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("forged CRL: %v", err)
	}
	if n > 256<<10 {
		t.Fatalf("refusing a forged CRL of %d bytes allocated %d bytes; want under 256 KiB", len(forged), n)
	}
	t.Logf("forged CRL of %.1f MB refused after %d bytes allocated", float64(len(forged))/1e6, n)
	n, kept, snap, err := allocated(good)
	if err != nil {
		t.Fatalf("good CRL: %v", err)
	}
	if snap.Len() != entries || !snap.Revoked(serials[0]) || !snap.Revoked(serials[entries-1]) {
		t.Fatalf("good CRL indexed %d entries", snap.Len())
	}
	if limit := uint64(40*entries + 1<<20); kept > limit {
		t.Fatalf("the index of %d entries keeps %d bytes; want under %d", entries, kept, limit)
	}
	// The sort (keysort.go) moves the keys from the slice they were read into to a
	// second one, 24 bytes an entry that are garbage once Parse returns.
	if limit := uint64(64*entries + 1<<20); n > limit {
		t.Fatalf("indexing %d entries allocated %d bytes; want under %d", entries, n, limit)
	}
	t.Logf("good CRL of %.1f MB indexed in %d bytes allocated, %d kept", float64(len(good))/1e6, n, kept)
}

// TestMaxCRLSizeFitsAMillion: MaxCRLSize holds a CRL of a million entries in the CA's
// own format, and in RFC 5280's largest (20-byte serials, GeneralizedTime dates), with a
// margin.
func TestMaxCRLSizeFitsAMillion(t *testing.T) {
	pki := testenv.NewPKI(t)
	empty, _ := caFormatCRL(t, pki, caFormat{})
	thousand, _ := caFormatCRL(t, pki, caFormat{Entries: 1000})
	perEntry := float64(len(thousand)-len(empty)) / 1000
	const worstEntry = 2 + (2 + 20) + (2 + 15) + (2 + 2 + 5 + 5) // SEQUENCE{serial, GeneralizedTime, {{reasonCode}}}
	if perEntry > 50 || perEntry < 45 {
		t.Fatalf("the CA's format takes %.1f bytes an entry; the cap's comment says 50", perEntry)
	}
	for _, per := range []float64{perEntry, worstEntry} {
		if need := 1e6*per + float64(len(empty)); need*1.05 > crl.MaxCRLSize {
			t.Errorf("a million entries of %.1f bytes need %.0f bytes: MaxCRLSize %d leaves less than 5%%", per, need, crl.MaxCRLSize)
		}
	}
	if 2e6*perEntry < crl.MaxCRLSize {
		t.Errorf("MaxCRLSize %d holds two million entries: lower it", crl.MaxCRLSize)
	}
}
