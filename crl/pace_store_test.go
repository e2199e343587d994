package crl_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestStorePacesReload: a Store's first load runs unpaced, a reload of a large CRL is
// paced (pace.go) and indexes every entry, and so is its re-signing, which keeps the
// index; a small CRL's reload is not paced, nor a large one that replaces a stale CRL.
func TestStorePacesReload(t *testing.T) {
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.crl")
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, StateFile: filepath.Join(dir, "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	const big = 250_000 // 12.5 MB of entries, over paceMinBytes
	at := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	for i, tc := range []struct {
		name    string
		crl     caFormat
		paced   bool
		reused  bool
		entries int
	}{
		{"first load, large", caFormat{Entries: big, Seed: 1, Number: 1}, false, false, big},
		{"small reload", caFormat{Entries: 1000, Seed: 2, Number: 2}, false, false, 1000},
		{"large reload", caFormat{Entries: big, Seed: 3, Number: 3, RevokedAt: at}, true, false, big},
		{"large re-signed", caFormat{Entries: big, Seed: 3, Number: 4, RevokedAt: at}, true, true, big},
	} {
		der, serials := caFormatCRL(t, pki, tc.crl)
		testenv.WriteFile(t, path, der)
		if changed, err := store.Refresh(context.Background()); err != nil || !changed {
			t.Fatalf("%s: changed=%v err=%v", tc.name, changed, err)
		}
		s := store.Load()
		if got := crl.Paced(s) > 0; got != tc.paced {
			t.Errorf("%s: paced %v (%v), want %v", tc.name, got, crl.Paced(s), tc.paced)
		}
		if s.Len() != tc.entries || crl.IndexReused(s) != tc.reused {
			t.Errorf("%s: %d entries, reused %v", tc.name, s.Len(), crl.IndexReused(s))
		}
		for _, n := range []int{0, len(serials) / 2, len(serials) - 1} {
			if !s.Revoked(serials[n]) {
				t.Fatalf("%s (load %d): serial %d of %d not revoked", tc.name, i, n, len(serials))
			}
		}
	}
}

// TestStoreStaleReloadUnpaced: while the CRL in use is stale the CA's users are
// refused, so the reload that ends it is not paced, however large.
func TestStoreStaleReloadUnpaced(t *testing.T) {
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.crl")
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, MaxAge: time.Millisecond, StateFile: filepath.Join(dir, "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	for i, seed := range []uint64{1, 2} {
		der, _ := caFormatCRL(t, pki, caFormat{Entries: 250_000, Seed: seed, Number: int64(i + 1)})
		testenv.WriteFile(t, path, der)
		time.Sleep(5 * time.Millisecond) // past max_age: the CRL in use is stale
		if _, err := store.Fresh(time.Now()); i > 0 && err == nil {
			t.Fatal("the CRL in use is not stale")
		}
		if changed, err := store.Refresh(context.Background()); err != nil || !changed {
			t.Fatalf("load %d: changed=%v err=%v", i, changed, err)
		}
		if p := crl.Paced(store.Load()); p != 0 {
			t.Fatalf("load %d paced %v while the CRL was stale", i, p)
		}
	}
}
