package crl_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestStoreFileStat: a poll of a CRL file whose stat has not changed since a read that
// settled does not read it, and still confirms the CRL; a touch, an in-place rewrite of
// the same size (even with the mtime put back), a replacement by rename and the minute's
// full re-read each read it.
func TestStoreFileStat(t *testing.T) {
	pki := testenv.NewPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.crl")
	first := pki.CRL(t, testenv.CRLOptions{})
	testenv.WriteFile(t, path, first)
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate})
	if err != nil {
		t.Fatal(err)
	}
	var offset time.Duration
	crl.SetClock(store, func() time.Time { return time.Now().Add(offset) })
	// sameSize is a new CRL of first's length: rewritten over it, only the times differ.
	sameSize := func() []byte {
		for range 100 {
			if der := pki.CRL(t, testenv.CRLOptions{}); len(der) == len(first) {
				return der
			}
		}
		t.Fatal("no CRL of the same length in 100")
		return nil
	}
	inode := func() uint64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	origIno := inode()
	for i, st := range []struct {
		name     string
		change   func()
		at       time.Duration // the poll's clock, ahead of the real one
		read     bool
		installs bool
	}{
		{name: "first load", read: true, installs: true},
		{name: "read within the change's settling time", at: 1 * time.Second, read: true},
		{name: "read settled: polled again", at: 3 * time.Second, read: true},
		{name: "unchanged", at: 4 * time.Second},
		{name: "unchanged, later", at: 30 * time.Second},
		{name: "a minute since the last full read", at: 63 * time.Second, read: true},
		{name: "unchanged after the full read", at: 64 * time.Second},
		{name: "touched", change: func() {
			if err := os.Chtimes(path, time.Now(), time.Now()); err != nil {
				t.Fatal(err)
			}
		}, at: 70 * time.Second, read: true},
		{name: "unchanged after the touch", at: 71 * time.Second},
		{name: "rewritten in place, same size", change: func() { testenv.WriteFile(t, path, sameSize()) }, at: 75 * time.Second, read: true, installs: true},
		{name: "unchanged after the rewrite", at: 80 * time.Second},
		{name: "rewritten in place, same size, mtime put back", change: func() {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			testenv.WriteFile(t, path, sameSize())
			if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		}, at: 85 * time.Second, read: true, installs: true},
		{name: "unchanged after that", at: 90 * time.Second},
		{name: "replaced by rename", change: func() {
			tmp := path + ".tmp"
			testenv.WriteFile(t, tmp, pki.CRL(t, testenv.CRLOptions{}))
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}, at: 95 * time.Second, read: true, installs: true},
		{name: "unchanged after the rename", at: 100 * time.Second},
	} {
		if st.change != nil {
			st.change()
		}
		offset = st.at
		reads, before := crl.FileReads(store), store.ConfirmedAt()
		changed, err := store.Refresh(context.Background())
		if err != nil {
			t.Fatalf("%d %s: %v", i, st.name, err)
		}
		if read := crl.FileReads(store) > reads; read != st.read || changed != st.installs {
			t.Fatalf("%d %s: read %v, installed %v; want %v, %v", i, st.name, read, changed, st.read, st.installs)
		}
		if !store.ConfirmedAt().After(before) {
			t.Fatalf("%d %s: the poll did not confirm the CRL", i, st.name)
		}
	}
	if inode() == origIno {
		t.Fatal("the rename kept the inode: the case was not tested")
	}
}
