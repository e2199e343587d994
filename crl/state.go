package crl

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The state file remembers, per issuer, the highest CRL number a Store installed, so
// that "never a lower CRL number" outlives a restart or a reload: without it an older,
// validly signed CRL — one that does not list a card revoked since — is taken by a
// fresh process until its nextUpdate plus grace. One file may serve every Store of a
// process (entries are keyed by the SHA-256 of the issuer's public key, so a re-issued
// CA certificate with the same key keeps its entry); it is not meant to be shared by two
// processes at once (each rewrites it whole). It is written atomically: a temporary file
// in the same directory, fsync, rename, fsync of the directory; mode 0600.
type stateFile struct {
	Issuers map[string]stateEntry `json:"issuers"`
}

type stateEntry struct {
	// Number is the highest CRL number installed, in decimal.
	Number  string    `json:"crl_number"`
	Subject string    `json:"subject"` // for a person reading the file
	Updated time.Time `json:"updated"`
}

// stateLocks serialises the read-modify-write of each state file within the process.
var stateLocks sync.Map // path → *sync.Mutex

func stateLock(path string) *sync.Mutex {
	m, _ := stateLocks.LoadOrStore(filepath.Clean(path), new(sync.Mutex))
	return m.(*sync.Mutex)
}

func issuerKey(issuer *x509.Certificate) string {
	sum := sha256.Sum256(issuer.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

func readState(path string) (stateFile, error) {
	st := stateFile{Issuers: map[string]stateEntry{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("crl: state file %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("crl: state file %s is malformed (%v): restore it or remove it (removing it forgets the highest CRL numbers seen, so an older CRL would be accepted once)", path, err)
	}
	if st.Issuers == nil {
		st.Issuers = map[string]stateEntry{}
	}
	return st, nil
}

// loadFloor returns the highest CRL number recorded for issuer, or nil.
func loadFloor(path string, issuer *x509.Certificate) (*big.Int, error) {
	mu := stateLock(path)
	mu.Lock()
	defer mu.Unlock()
	st, err := readState(path)
	if err != nil {
		return nil, err
	}
	e, ok := st.Issuers[issuerKey(issuer)]
	if !ok {
		return nil, nil
	}
	n, ok := new(big.Int).SetString(e.Number, 10)
	if !ok || n.Sign() < 0 {
		return nil, fmt.Errorf("crl: state file %s: CRL number %q of %q is not a number: restore the file or remove the entry", path, e.Number, e.Subject)
	}
	return n, nil
}

// saveFloor records n as issuer's highest CRL number, unless the file already holds a
// higher one.
func saveFloor(path string, issuer *x509.Certificate, n *big.Int, now time.Time) error {
	mu := stateLock(path)
	mu.Lock()
	defer mu.Unlock()
	st, err := readState(path)
	if err != nil {
		return err
	}
	key := issuerKey(issuer)
	if old, ok := new(big.Int).SetString(st.Issuers[key].Number, 10); ok && old.Cmp(n) >= 0 {
		return nil
	}
	st.Issuers[key] = stateEntry{Number: n.String(), Subject: issuer.Subject.String(), Updated: now.UTC()}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("crl: state file %s: %w", path, err)
	}
	if err := writeAtomic(path, append(data, '\n')); err != nil {
		return fmt.Errorf("crl: state file %s: %w", path, err)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename, a no-op
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
