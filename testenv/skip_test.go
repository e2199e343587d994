package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSkipLoudly: a loud skip reaches the file make test summarises.
func TestSkipLoudly(t *testing.T) {
	f := filepath.Join(t.TempDir(), "skips")
	t.Setenv("IMAPGATE_SKIP_FILE", f)
	t.Run("cannot_run", func(t *testing.T) { SkipLoudly(t, "no mail program here") })
	b, err := os.ReadFile(f)
	if err != nil || string(b) != "SKIP TestSkipLoudly/cannot_run: no mail program here\n" {
		t.Fatalf("skip file: %q, %v", b, err)
	}
}
