package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// SoftHSMModule is Debian's SoftHSM2 PKCS#11 module.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// SoftHSMToken is a SoftHSM2 token private to one test.
type SoftHSMToken struct {
	// Module is the PKCS#11 module path.
	Module string
	// Label is the token label (select tokens by label, never by slot);
	// Serial its serial number, the other stable way to select it.
	Label, Serial string
	// PIN and SOPIN are the test token's PINs. Test values only.
	PIN, SOPIN string
	// Conf is the SOFTHSM2_CONF file, Dir the token directory.
	Conf, Dir string
}

// SoftHSM makes a SoftHSM2 configuration and token directory in
// t.TempDir(), points SOFTHSM2_CONF at it with t.Setenv (so the test may not
// run in parallel), and initialises one token labelled "imapgate-test" with
// user PIN 123456 and SO PIN 12345678.
//
// SoftHSM reads SOFTHSM2_CONF in C_Initialize, so a module opened before
// this call keeps seeing the old directory: open the module afterwards and
// close it before the test ends.
func SoftHSM(t testing.TB) *SoftHSMToken {
	t.Helper()
	return SoftHSMLabel(t, "imapgate-test")
}

// SoftHSMLabel is SoftHSM with a chosen token label.
func SoftHSMLabel(t testing.TB, label string) *SoftHSMToken {
	t.Helper()
	p11Need(t, "softhsm2-util")
	if _, err := os.Stat(SoftHSMModule); err != nil {
		t.Fatalf("testenv: %s missing: run make deps", SoftHSMModule)
	}
	dir := t.TempDir()
	tokDir := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	// slots.removable=false: tokens stay put; log.level=ERROR keeps syslog quiet.
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokDir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	tok := &SoftHSMToken{Module: SoftHSMModule, PIN: "123456", SOPIN: "12345678", Conf: conf, Dir: tokDir}
	tok.Label = label
	tok.Serial = tok.AddToken(t, label)
	return tok
}

// AddToken initialises another token with the same PINs in the same
// configuration (for tests that need two tokens) and returns its serial.
func (s *SoftHSMToken) AddToken(t testing.TB, label string) string {
	t.Helper()
	before := softHSMSerials(t, label)
	RunTool(t, nil, "softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", s.SOPIN, "--pin", s.PIN)
	for _, serial := range softHSMSerials(t, label) {
		if !slices.Contains(before, serial) {
			return serial
		}
	}
	t.Fatalf("testenv: softhsm2-util --show-slots does not list the new token %q", label)
	return ""
}

// softHSMSerials lists the serials of the tokens labelled label, from
// softhsm2-util --show-slots (in each slot, "Serial number:" comes before
// "Label:").
func softHSMSerials(t testing.TB, label string) []string {
	t.Helper()
	var serials []string
	var serial string
	for _, line := range strings.Split(RunTool(t, nil, "softhsm2-util", "--show-slots"), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "Serial number":
			serial = strings.TrimSpace(v)
		case "Label":
			if strings.TrimSpace(v) == label && serial != "" {
				serials = append(serials, serial)
			}
			serial = ""
		}
	}
	return serials
}

// Env is the environment for a child process that must see this token.
func (s *SoftHSMToken) Env() []string {
	return append(os.Environ(), "SOFTHSM2_CONF="+s.Conf)
}

// NSSDB makes an NSS database in t.TempDir() with the PKCS#11 module added
// as a security device, the way Thunderbird loads a smartcard module, and
// returns its "sql:DIR" name.
func NSSDB(t testing.TB, module string, env []string) string {
	t.Helper()
	p11Need(t, "certutil")
	p11Need(t, "modutil")
	dir := t.TempDir()
	db := "sql:" + dir
	RunTool(t, env, "certutil", "-N", "-d", db, "--empty-password")
	cmd := exec.Command("modutil", "-dbdir", db, "-add", "imapgate-token", "-libfile", module, "-force")
	cmd.Env = env
	// modutil asks to confirm on a terminal even with -force; feed it a newline.
	cmd.Stdin = strings.NewReader("\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: modutil -add %s: %v\n%s", module, err, out)
	}
	return db
}

// RunTool runs a command (env nil: inherit) and fails the test if it fails.
// It returns the combined output.
func RunTool(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	p11Need(t, name)
	cmd := exec.Command(name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func p11Need(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("testenv: %s not found: run make deps", tool)
	}
}
