package crl_test

import (
	"context"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestStateFileRollbackAfterRestart: the highest CRL number survives a restart (a new
// Store on the same state file): an older, validly signed CRL is refused by the fresh
// store too; the same number and higher ones are taken, and the file follows them.
func TestStateFileRollbackAfterRestart(t *testing.T) {
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	path, state := filepath.Join(dir, "ca.crl"), filepath.Join(dir, "crl-state.json")
	ctx := context.Background()
	open := func() *crl.Store {
		t.Helper()
		s, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, StateFile: state})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	serve := func(n int64) { testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{Number: big.NewInt(n)})) }

	serve(5)
	if _, err := open().Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatalf("no state file written: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	// Restart: CRL 3 was validly signed, but is older than 5.
	serve(3)
	restarted := open()
	if _, err := restarted.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "older than the recorded") {
		t.Fatalf("older CRL after restart: %v", err)
	}
	if restarted.Load() != nil {
		t.Fatal("the older CRL was installed")
	}
	testenv.WriteFile(t, path, unnumberedCRL(t, pki))
	if _, err := restarted.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "without a CRL number") {
		t.Fatalf("unnumbered CRL after restart: %v", err)
	}
	for _, n := range []int64{5, 6} {
		serve(n)
		if _, err := restarted.Refresh(ctx); err != nil {
			t.Fatalf("CRL %d: %v", n, err)
		}
	}
	serve(5)
	if _, err := open().Refresh(ctx); err == nil {
		t.Fatal("CRL 5 accepted after 6 was recorded")
	}
	data, _ := os.ReadFile(state)
	if !strings.Contains(string(data), `"crl_number": "6"`) {
		t.Fatalf("state file does not record 6:\n%s", data)
	}
	// Another issuer in the same file is independent of this one.
	other := testenv.NewPKI(t)
	otherPath := filepath.Join(dir, "other.crl")
	testenv.WriteFile(t, otherPath, other.CRL(t, testenv.CRLOptions{Number: big.NewInt(1)}))
	os2, err := crl.NewStore(crl.Options{File: otherPath, Issuer: other.Intermediate, StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os2.Refresh(ctx); err != nil {
		t.Fatalf("second issuer: %v", err)
	}
	if _, err := open().Refresh(ctx); err == nil {
		t.Fatal("the second issuer's entry reset the first's")
	}
}

func TestStateFileMalformed(t *testing.T) {
	pki := testenv.NewPKI(t)
	state := filepath.Join(t.TempDir(), "crl-state.json")
	testenv.WriteFile(t, state, []byte("{not json"))
	_, err := crl.NewStore(crl.Options{File: "/nonexistent", Issuer: pki.Intermediate, StateFile: state})
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed state file: %v", err)
	}
}
