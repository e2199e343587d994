package testenv

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// p11faultSource is the fault-injecting PKCS#11 module (see its comment).
//
//go:embed p11fault/p11fault.c
var p11faultSource []byte

// P11Fault is a SoftHSM2 token seen through p11fault, a small PKCS#11
// module (testenv/p11fault/p11fault.c) that forwards every call to the real
// SoftHSM2 module and injects, on demand, the faults a software token cannot
// produce: a locked PIN, low PIN retry counters, a token pulled out or
// inserted, a full token. Load Module instead of Token.Module.
type P11Fault struct {
	// Module is the path of the p11fault library to load.
	Module string
	// Control is the control file the library reads on every call.
	Control string
	// Token is the SoftHSM2 token behind it.
	Token *SoftHSMToken

	mu  sync.Mutex
	seq int
}

// FaultMode names a fault of p11fault.
type FaultMode string

// The faults. Each affects every slot of the module (tests have one token).
const (
	// FaultNone forwards everything: the token as SoftHSM2 has it.
	FaultNone FaultMode = "none"
	// FaultPINLocked: a user login (and C_SetPIN) answers CKR_PIN_LOCKED
	// and the token flags CKF_USER_PIN_LOCKED, until the SO sets a new user
	// PIN with C_InitPIN, as on a card.
	FaultPINLocked FaultMode = "pin_locked"
	// FaultPINCountLow: the token flags CKF_USER_PIN_COUNT_LOW until a good
	// user login.
	FaultPINCountLow FaultMode = "pin_count_low"
	// FaultFinalTry: the token flags CKF_USER_PIN_COUNT_LOW and
	// CKF_USER_PIN_FINAL_TRY; one more wrong user PIN locks it
	// (FaultPINLocked), a good one resets the counter.
	FaultFinalTry FaultMode = "final_try"
	// FaultPINExpired: a good user login answers CKR_PIN_EXPIRED (logged
	// in for C_SetPIN only) and the token flags CKF_USER_PIN_TO_BE_CHANGED,
	// until the PIN is changed (C_SetPIN) or set by the SO (C_InitPIN).
	FaultPINExpired FaultMode = "pin_expired"
	// FaultRemoveAfter: after Fault.After further calls (of Fault.On, if
	// given) the token is pulled out: its sessions close, C_GetSlotList
	// (TRUE) leaves it out, calls on the slot answer CKR_TOKEN_NOT_PRESENT
	// and calls on a session Fault.RV.
	FaultRemoveAfter FaultMode = "remove_after"
	// FaultMemoryFull: C_GenerateKeyPair and C_CreateObject (or only those
	// of Fault.On) answer CKR_DEVICE_MEMORY.
	FaultMemoryFull FaultMode = "memory_full"
	// FaultHidden: the token is out of the reader now. Setting another
	// fault (FaultNone) inserts it.
	FaultHidden FaultMode = "hidden"
)

// Fault is one setting of the control file.
type Fault struct {
	Mode FaultMode
	// After is FaultRemoveAfter's count of calls that still succeed.
	After int
	// On restricts the calls FaultRemoveAfter counts, or that
	// FaultMemoryFull fails, to these (C_CreateObject, ...). Default: every
	// call on a slot or a session.
	On []string
	// RV is what calls on a session of a pulled-out token answer:
	// CKR_DEVICE_REMOVED (0x32) when zero; CKR_SESSION_HANDLE_INVALID (0xB3)
	// is the other common answer.
	RV uint
}

func (f Fault) line(seq int) string {
	s := fmt.Sprintf("seq=%d mode=%s after=%d", seq, f.Mode, f.After)
	if len(f.On) > 0 {
		s += " on=" + strings.Join(f.On, ",")
	}
	if f.RV != 0 {
		s += fmt.Sprintf(" rv=%#x", f.RV)
	}
	return s + "\n"
}

var (
	p11faultOnce sync.Once
	p11faultLib  string
	p11faultErr  error
)

// buildP11Fault compiles the library once per test binary, into the user's
// cache under the hash of its source (so runs share it and a changed source
// rebuilds).
func buildP11Fault() (string, error) {
	p11faultOnce.Do(func() {
		sum := sha256.Sum256(p11faultSource)
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		dir = filepath.Join(dir, "imapgate-testenv")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			p11faultErr = err
			return
		}
		lib := filepath.Join(dir, "libp11fault-"+hex.EncodeToString(sum[:8])+".so")
		if _, err := os.Stat(lib); err == nil {
			p11faultLib = lib
			return
		}
		tmp, err := os.MkdirTemp(dir, "build-")
		if err != nil {
			p11faultErr = err
			return
		}
		defer os.RemoveAll(tmp)
		src := filepath.Join(tmp, "p11fault.c")
		if err := os.WriteFile(src, p11faultSource, 0o600); err != nil {
			p11faultErr = err
			return
		}
		out := filepath.Join(tmp, "libp11fault.so")
		cmd := exec.Command("cc", "-shared", "-fPIC", "-fvisibility=hidden", "-O1", "-Wall", "-Wextra", "-Werror",
			"-I/usr/include/p11-kit-1", "-o", out, src, "-ldl", "-lpthread")
		if b, err := cmd.CombinedOutput(); err != nil {
			p11faultErr = fmt.Errorf("cc p11fault.c: %v\n%s", err, b)
			return
		}
		// A rename, so a concurrent test binary never loads half a file.
		if err := os.Rename(out, lib); err != nil {
			p11faultErr = err
			return
		}
		p11faultLib = lib
	})
	return p11faultLib, p11faultErr
}

// NewP11Fault puts p11fault in front of tok: it builds the library (once per
// test binary, with cc and p11-kit's pkcs11.h), makes a control file in
// t.TempDir() with no fault set, and points P11FAULT_MODULE and
// P11FAULT_CONTROL at SoftHSM2 and that file with t.Setenv. As with
// SoftHSM, open the module after this call: p11fault takes the control
// file's path in C_Initialize.
//
// p11fault loads SoftHSM2 itself, so in one process the token must be used
// through Module only: a second load of SoftHSM2 by its own path would share
// its state (logins, C_Finalize) with p11fault's.
func NewP11Fault(t testing.TB, tok *SoftHSMToken) *P11Fault {
	t.Helper()
	p11Need(t, "cc")
	if _, err := os.Stat("/usr/include/p11-kit-1/p11-kit/pkcs11.h"); err != nil {
		t.Fatal("testenv: /usr/include/p11-kit-1/p11-kit/pkcs11.h missing: install libp11-kit-dev (make deps)")
	}
	lib, err := buildP11Fault()
	if err != nil {
		t.Fatalf("testenv: build p11fault: %v", err)
	}
	f := &P11Fault{Module: lib, Control: filepath.Join(t.TempDir(), "p11fault.ctl"), Token: tok}
	t.Setenv("P11FAULT_MODULE", tok.Module)
	t.Setenv("P11FAULT_CONTROL", f.Control)
	f.Set(t, Fault{Mode: FaultNone})
	return f
}

// Set replaces the fault. The library sees it at its next call; setting the
// same fault again restarts it (a new count for FaultRemoveAfter).
func (f *P11Fault) Set(t testing.TB, fault Fault) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	tmp := f.Control + ".new"
	if err := os.WriteFile(tmp, []byte(fault.line(f.seq)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A rename, so the library never reads half a line.
	if err := os.Rename(tmp, f.Control); err != nil {
		t.Fatal(err)
	}
}

// Clear sets FaultNone: the token is back, as SoftHSM2 has it.
func (f *P11Fault) Clear(t testing.TB) {
	t.Helper()
	f.Set(t, Fault{Mode: FaultNone})
}

// Env is the environment for a child process that loads Module.
func (f *P11Fault) Env() []string {
	return append(f.Token.Env(), "P11FAULT_MODULE="+f.Token.Module, "P11FAULT_CONTROL="+f.Control)
}
