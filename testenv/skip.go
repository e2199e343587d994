package testenv

import (
	"fmt"
	"os"
	"testing"
)

// SkipLoudly skips the test with reason, and when IMAPGATE_SKIP_FILE names a
// file (make test sets it) appends the test's name and the reason to it, so
// the run's summary lists every such skip.
func SkipLoudly(t testing.TB, reason string) {
	t.Helper()
	if f := os.Getenv("IMAPGATE_SKIP_FILE"); f != "" {
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(fh, "SKIP %s: %s\n", t.Name(), reason)
			fh.Close()
		}
	}
	t.Skip("SKIPPED, NOT TESTED: " + reason)
}
