package mtls

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFrontCertProblems: the front's own certificate is checked for what makes mail
// programs refuse it, on the fixtures in testdata/frontcert (good_… has none).
func TestFrontCertProblems(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		fixture string
		now     time.Time
		want    []string // one problem each, in order
	}{
		{"good_server", now, nil},
		{"good_server", time.Date(2125, 12, 25, 0, 0, 0, 0, time.UTC), []string{"expires on 2126-01-01, in 7 days"}},
		{"fail_ca_certificate", now, []string{"is a CA certificate"}},
		{"fail_no_serverauth", now, []string{"lacks the extended key usage serverAuth"}},
		{"fail_no_eku", now, []string{"lacks the extended key usage serverAuth"}},
		{"fail_expired", now, []string{"expired on 2025-01-01"}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			if strings.HasPrefix(tc.fixture, "fail_") && len(tc.want) == 0 {
				t.Fatalf("a fail_ fixture must have a problem")
			}
			cert := loadFixturePair(t, tc.fixture)
			got := frontCertProblems([]tls.Certificate{cert}, tc.now)
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) || !strings.Contains(got[i], "imapgate cert server") {
					t.Errorf("problem %q: want %q and how to get a proper certificate", got[i], w)
				}
			}
		})
	}
}

// loadFixturePair loads testdata/frontcert/name.{crt,key}. git keeps no 0600, which the
// key loader demands, so the key is copied to a private file first.
func loadFixturePair(t *testing.T, name string) tls.Certificate {
	t.Helper()
	crt, key := FixtureFrontCert(t, name)
	c, err := loadKeyPair(crt, key, "test key")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FixtureFrontCert copies testdata/frontcert/name.{crt,key} into a temporary directory
// (the key 0600) and returns their paths. Exported for the package's external tests.
func FixtureFrontCert(t testing.TB, name string) (crt, key string) {
	t.Helper()
	dir := t.TempDir()
	for _, ext := range []string{".crt", ".key"} {
		data, err := os.ReadFile(filepath.Join("testdata", "frontcert", name+ext))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+ext)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if ext == ".crt" {
			crt = p
		} else {
			key = p
		}
	}
	return crt, key
}
