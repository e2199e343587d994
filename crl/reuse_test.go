package crl_test

import (
	"context"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestReuseIndex: a CRL re-signed with the same entries shares the index of the
// snapshot before it, and one whose entries differ in any byte gets its own; every
// lookup is right either way, and the checks around the entries still run.
func TestReuseIndex(t *testing.T) {
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	at := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	base := caFormat{Entries: 200, Seed: 7, RevokedAt: at}
	with := func(number int64, edit func(*caFormat)) caFormat {
		o := base
		o.Number = number
		if edit != nil {
			edit(&o)
		}
		return o
	}
	// prev is a fresh load of base's entries: every built index has the digest of its
	// entries (reuse.go), so the first re-signing after it can share it.
	second, listed := caFormatCRL(t, pki, with(2, nil))
	now := time.Now()
	prev, err := crl.Parse(second, pki.Intermediate, now)
	if err != nil {
		t.Fatal(err)
	}
	if crl.IndexReused(prev) {
		t.Fatal("a first load reused an index")
	}
	extra := big.NewInt(123456789)
	for _, tc := range []struct {
		name   string
		o      caFormat
		reused bool
		want   func([]*big.Int) []*big.Int // the serials it must list (default: listed)
		absent []*big.Int
		err    string
	}{
		{name: "re-signed, same entries", o: with(3, nil), reused: true},
		{name: "re-signed, same entries, same number", o: with(2, nil), reused: true},
		{name: "entry added", o: with(3, func(o *caFormat) {
			o.Edit = func(s []*big.Int) []*big.Int { return append(s, extra) }
		}), want: func(s []*big.Int) []*big.Int { return append(slices.Clone(s), extra) }},
		{name: "entry removed", o: with(3, func(o *caFormat) {
			o.Edit = func(s []*big.Int) []*big.Int { return s[1:] }
		}), want: func(s []*big.Int) []*big.Int { return s[1:] }, absent: listed[:1]},
		{name: "serial changed, same length", o: with(3, func(o *caFormat) {
			o.Edit = func(s []*big.Int) []*big.Int {
				s[5] = new(big.Int).Xor(s[5], big.NewInt(1))
				return s
			}
		}), want: func(s []*big.Int) []*big.Int {
			s = slices.Clone(s)
			s[5] = new(big.Int).Xor(s[5], big.NewInt(1))
			return s
		}, absent: listed[5:6]},
		{name: "revocation date changed, same serials", o: with(3, func(o *caFormat) { o.RevokedAt = at.Add(time.Second) })},
		{name: "same entries, forged signature", o: with(3, func(o *caFormat) { o.Signer = other.InterKey }), err: "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, _ := caFormatCRL(t, pki, tc.o)
			snap, err := crl.ParseAfter(der, pki.Intermediate, now, prev)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := crl.IndexReused(snap); got != tc.reused || crl.SameIndex(snap, prev) != tc.reused {
				t.Fatalf("reused %v (same index %v), want %v", got, crl.SameIndex(snap, prev), tc.reused)
			}
			if snap.Number.Int64() != tc.o.Number {
				t.Fatalf("number %v, want %d", snap.Number, tc.o.Number)
			}
			want := listed
			if tc.want != nil {
				want = tc.want(listed)
			}
			if snap.Len() != len(want) {
				t.Fatalf("%d entries, want %d", snap.Len(), len(want))
			}
			for _, s := range want {
				if !snap.Revoked(s) {
					t.Fatalf("serial %s listed, not found", s)
				}
			}
			for _, s := range slices.Concat(tc.absent, []*big.Int{big.NewInt(1), extra}) {
				if !slices.ContainsFunc(want, func(w *big.Int) bool { return w.Cmp(s) == 0 }) && snap.Revoked(s) {
					t.Fatalf("serial %s not listed, found", s)
				}
			}
		})
	}
}

// TestStoreReusesIndex: through the Store, re-signed CRLs with the same entries share
// one index from the second on, while the Store's own checks still refuse an older
// CRL number whose entries are the same.
func TestStoreReusesIndex(t *testing.T) {
	pki := testenv.NewPKI(t)
	for i := range 20 {
		pki.Revoke(big.NewInt(int64(1000 + i)))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.crl")
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, StateFile: filepath.Join(dir, "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var snaps []*crl.Snapshot
	for i, want := range []bool{false, true, true, true} {
		testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
		if changed, err := store.Refresh(ctx); err != nil || !changed {
			t.Fatalf("load %d: changed=%v err=%v", i, changed, err)
		}
		s := store.Load()
		if crl.IndexReused(s) != want {
			t.Fatalf("load %d: reused %v, want %v", i, crl.IndexReused(s), want)
		}
		if s.Len() != 20 || !s.Revoked(big.NewInt(1000)) || !s.Revoked(big.NewInt(1019)) || s.Revoked(big.NewInt(1020)) {
			t.Fatalf("load %d: wrong lookups (%d entries)", i, s.Len())
		}
		snaps = append(snaps, s)
	}
	if !crl.SameIndex(snaps[0], snaps[3]) {
		t.Fatal("the re-signed CRLs do not share one index")
	}
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{Number: big.NewInt(2)}))
	if _, err := store.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "older than") {
		t.Fatalf("an older number with the same entries: %v", err)
	}
	pki.Revoke(big.NewInt(2000))
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
	if changed, err := store.Refresh(ctx); err != nil || !changed {
		t.Fatalf("entry added: changed=%v err=%v", changed, err)
	}
	if s := store.Load(); crl.IndexReused(s) || !s.Revoked(big.NewInt(2000)) || s.Len() != 21 {
		t.Fatalf("entry added: reused %v, 2000 revoked %v, %d entries", crl.IndexReused(s), s.Revoked(big.NewInt(2000)), s.Len())
	}
}
