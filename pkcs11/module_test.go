package pkcs11

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/testenv"
)

func TestOpenBadModule(t *testing.T) {
	dir := t.TempDir()
	notSO := filepath.Join(dir, "notes.so")
	if err := os.WriteFile(notSO, []byte("not a library"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, want string
	}{
		{"empty", "", "no module given"},
		{"missing", filepath.Join(dir, "nope.so"), "does not exist"},
		{"directory", dir, "is a directory"},
		{"not a library", notSO, "is not a PKCS#11 module"},
		{"bare name not found", "no-such-pkcs11.so", "is not a PKCS#11 module"},
		// libc loads fine but has no C_GetFunctionList.
		{"not PKCS#11", "/lib/x86_64-linux-gnu/libc.so.6", "is not a PKCS#11 module"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Open(c.path)
			if err == nil {
				m.Close()
				t.Fatal("want error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestTokensAndSelection(t *testing.T) {
	env := testenv.SoftHSM(t)
	env.AddToken(t, "second-card")
	env.AddToken(t, "twin")
	env.AddToken(t, "twin")
	mod, err := Open(env.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	if got := mod.Info().Profile; got != "softhsm2" {
		t.Errorf("profile %q, want softhsm2", got)
	}
	toks, err := mod.Tokens()
	if err != nil {
		t.Fatal(err)
	}
	var first TokenInfo
	labels := map[string]int{}
	for _, ti := range toks {
		labels[ti.Label]++
		if ti.Label == env.Label {
			first = ti
		}
	}
	// Four initialised tokens plus SoftHSM's spare uninitialised slot.
	if labels[env.Label] != 1 || labels["second-card"] != 1 || labels["twin"] != 2 || len(toks) != 5 {
		t.Fatalf("tokens: %+v", toks)
	}
	if first.Manufacturer != "SoftHSM project" || first.Model != "SoftHSM v2" || first.Serial != env.Serial {
		t.Errorf("token info: %+v", first)
	}
	if f := first.Flags; !f.Initialized || !f.UserPINInitialized || !f.LoginRequired || f.PINLocked || f.PINCountLow {
		t.Errorf("flags: %+v", f)
	}
	if w := first.Flags.Words(); len(w) != 1 || w[0] != "ok" {
		t.Errorf("flag words %v, want [ok]", w)
	}

	cases := []struct {
		name, sel  string
		wantLabel  string
		wantErr    string
		wantNoTokn bool
	}{
		{name: "by label", sel: env.Label, wantLabel: env.Label},
		{name: "by serial", sel: first.Serial, wantLabel: env.Label},
		{name: "other label", sel: "second-card", wantLabel: "second-card"},
		{name: "missing", sel: "nobody", wantErr: `no token labelled or numbered "nobody"`, wantNoTokn: true},
		{name: "ambiguous", sel: "twin", wantErr: "select by serial"},
		{name: "empty", sel: "", wantErr: "no token given"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := mod.OpenToken(c.sel)
			if c.wantErr != "" {
				if err == nil {
					tok.Close()
					t.Fatal("want error")
				}
				if !strings.Contains(err.Error(), c.wantErr) || errors.Is(err, ErrNoToken) != c.wantNoTokn {
					t.Fatalf("error %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tok.Close()
			if tok.Label() != c.wantLabel {
				t.Fatalf("opened %q, want %q", tok.Label(), c.wantLabel)
			}
		})
	}
}

func TestNoTokenPresent(t *testing.T) {
	env := testenv.SoftHSM(t)
	// An empty token directory: SoftHSM then offers only its free slot, a
	// token that is present but not initialised.
	if err := os.RemoveAll(env.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(env.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mod, err := Open(env.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	_, err = mod.OpenToken(env.Label)
	if !errors.Is(err, ErrNoToken) {
		t.Fatalf("got %v, want ErrNoToken", err)
	}
}

func TestModuleSharedAndReopened(t *testing.T) {
	env := testenv.SoftHSM(t)
	a, err := Open(env.Module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(env.Module) // second user of the same library
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// b must still work after a's Close.
	if _, err := b.FindToken(env.Label); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// And a fresh Open after the last Close initialises again.
	c, err := Open(env.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.FindToken(env.Label); err != nil {
		t.Fatal(err)
	}
}

// TestOpenSCNoCard opens the real OpenSC module (generic profile). CI has no
// reader, so no token is present; on a desk with a card in the reader the
// selection still must not match a made-up label.
func TestOpenSCNoCard(t *testing.T) {
	const opensc = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
	if _, err := os.Stat(opensc); err != nil {
		t.Fatalf("%s missing: run make deps", opensc)
	}
	mod, err := Open(opensc)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	if p := mod.Info().Profile; p != "generic" {
		t.Errorf("OpenSC profile %s, want generic", p)
	}
	toks, err := mod.Tokens()
	if err != nil {
		t.Fatal(err)
	}
	_, err = mod.OpenToken("imapgate-no-such-card")
	if !errors.Is(err, ErrNoToken) {
		t.Fatalf("got %v, want ErrNoToken", err)
	}
	if len(toks) == 0 && !strings.Contains(err.Error(), "no token is present in any slot") {
		t.Errorf("error %q does not say that no token is present", err)
	}
}
