package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var built struct {
	once      sync.Once
	dir, path string
	err       error
	out       []byte
}

// buildBinary builds imapgate once per test run, for tests that run the real
// binary (exit codes, signals, several listeners in one process).
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "imapgate-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir, built.path = dir, filepath.Join(dir, "imapgate")
		built.out, built.err = exec.Command("go", "build", "-o", built.path, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// TestUsageErrors runs the built binary: a mistake in the command line exits 2
// with one line on stderr and nothing on stdout; asking for help exits 0.
func TestUsageErrors(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ca", "bogus"}, 2, `unknown command "bogus" for "imapgate ca"`},
		{[]string{"bogus"}, 2, `unknown command "bogus" for "imapgate"`},
		{[]string{"cert", "bogus"}, 2, `unknown command "bogus" for "imapgate cert"`},
		{[]string{"token", "enroll", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"front", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"ca", "init"}, 2, `required flag(s) "dir", "name", "url" not set`},
		{[]string{"cert", "revoke"}, 2, "give the hex SERIAL of the certificate to revoke"},
		{[]string{"ca", "serve", "extra", "--dir", "x"}, 2, `unknown command "extra" for "imapgate ca serve"`},
		{[]string{"serve", "extra"}, 2, `unknown command "extra" for "imapgate serve"`},
		{[]string{"ca"}, 0, ""},
		{[]string{"--help"}, 0, ""},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if tc.code == 0 {
				if stdout.Len() == 0 {
					t.Error("no help printed")
				}
				return
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout not empty on a usage error: %q", stdout.String())
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("stderr %q: want one line containing %q", stderr.String(), tc.want)
			}
		})
	}
}
