package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// cryptoki is the part of the PKCS#11 API this package uses. *p11.Ctx
// implements it; the ykcs11 rules are unit-tested against a fake (no YubiKey
// in CI). The faults of real tokens are injected below the API instead, by
// testenv's p11fault module in front of SoftHSM2.
type cryptoki interface {
	Initialize(opts ...p11.InitializeOption) error
	Finalize() error
	Destroy()
	GetInfo() (p11.Info, error)
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (p11.TokenInfo, error)
	GetMechanismList(slotID uint) ([]*p11.Mechanism, error)
	OpenSession(slotID uint, flags uint) (p11.SessionHandle, error)
	CloseSession(sh p11.SessionHandle) error
	Login(sh p11.SessionHandle, userType uint, pin string) error
	Logout(sh p11.SessionHandle) error
	InitPIN(sh p11.SessionHandle, pin string) error
	SetPIN(sh p11.SessionHandle, oldpin string, newpin string) error
	GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, public, private []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error)
	GenerateRandom(sh p11.SessionHandle, length int) ([]byte, error)
	CreateObject(sh p11.SessionHandle, temp []*p11.Attribute) (p11.ObjectHandle, error)
	DestroyObject(sh p11.SessionHandle, oh p11.ObjectHandle) error
	GetAttributeValue(sh p11.SessionHandle, o p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error)
	FindObjectsInit(sh p11.SessionHandle, temp []*p11.Attribute) error
	FindObjects(sh p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error)
	FindObjectsFinal(sh p11.SessionHandle) error
	SignInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error
	Sign(sh p11.SessionHandle, message []byte) ([]byte, error)
}

// Module is a loaded PKCS#11 module (a shared library). Open it once per
// process per path; Close unloads it. A Module is safe for concurrent use.
type Module struct {
	path    string
	ctx     cryptoki
	info    p11.Info
	profile *Profile
	shared  *sharedModule
	logins  *slotLogins
}

// A PKCS#11 library can be initialised once per process: a second
// C_Initialize says CKR_CRYPTOKI_ALREADY_INITIALIZED and the first
// C_Finalize would pull the rug from under the other user. So loads of the
// same path share one context, counted.
type sharedModule struct {
	ctx  cryptoki
	refs int
	// ownInit: our C_Initialize succeeded. When something else in the
	// process initialised the library first (go.step.sm/crypto's KMS, say),
	// we must not C_Finalize it under that user.
	ownInit bool
	logins  *slotLogins
}

// slotLogins records which Token holds the login of each slot. PKCS#11
// logins belong to the application, not to a session: a second Token on
// the slot would get CKR_USER_ALREADY_LOGGED_IN without its PIN being
// checked, and its Logout would end the first one's login.
type slotLogins struct {
	mu     sync.Mutex
	holder map[uint]*Token
}

func newSlotLogins() *slotLogins { return &slotLogins{holder: map[uint]*Token{}} }

func (l *slotLogins) claim(slot uint, t *Token) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.holder[slot]; h != nil && h != t {
		return false
	}
	l.holder[slot] = t
	return true
}

func (l *slotLogins) release(slot uint, t *Token) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder[slot] == t {
		delete(l.holder, slot)
	}
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*sharedModule{}
)

// ModuleInfo describes a loaded module (C_GetInfo).
type ModuleInfo struct {
	Path           string
	Manufacturer   string
	Description    string
	LibraryVersion string
	Cryptoki       string
	Profile        string
}

// Open loads the PKCS#11 module at path and initialises it. The path must
// name the library file itself (for example /usr/lib/softhsm/libsofthsm2.so,
// /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so or libykcs11.so).
func Open(path string) (*Module, error) {
	if path == "" {
		return nil, errors.New("pkcs11: no module given: pass the path of the PKCS#11 library (--module), e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")
	}
	abs := path
	// A bare file name ("opensc-pkcs11.so") is left to the dynamic loader's
	// search path; anything with a slash must exist.
	if strings.ContainsRune(path, '/') {
		var err error
		if abs, err = filepath.Abs(path); err != nil {
			return nil, fmt.Errorf("pkcs11: module %s: %w", path, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("pkcs11: module %s does not exist: install the smartcard's PKCS#11 library or fix the path", path)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("pkcs11: module %s is a directory: give the path of the .so file", path)
		}
	}
	modulesMu.Lock()
	defer modulesMu.Unlock()
	sm := modules[abs]
	if sm == nil {
		c := p11.New(abs)
		if c == nil {
			return nil, fmt.Errorf("pkcs11: %s is not a PKCS#11 module (it cannot be loaded or has no C_GetFunctionList): check the path", path)
		}
		err := c.Initialize()
		if err != nil && !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			c.Destroy()
			return nil, fmt.Errorf("pkcs11: initialise module %s: %w%s", path, err, initHint(err))
		}
		sm = &sharedModule{ctx: c, ownInit: err == nil, logins: newSlotLogins()}
		modules[abs] = sm
	}
	m, err := newModule(abs, sm.ctx)
	if err != nil {
		if sm.refs == 0 {
			delete(modules, abs)
			sm.finalize()
		}
		return nil, err
	}
	sm.refs++
	m.shared = sm
	m.logins = sm.logins
	return m, nil
}

func initHint(err error) string {
	if errors.Is(err, p11.Error(p11.CKR_DEVICE_ERROR)) {
		return " (ykcs11 and OpenSC need pcscd running: systemctl start pcscd)"
	}
	return ""
}

// newModule wraps an initialised context; tests use it with wrappers and fakes.
func newModule(path string, c cryptoki) (*Module, error) {
	info, err := c.GetInfo()
	if err != nil {
		return nil, fmt.Errorf("pkcs11: module %s: C_GetInfo: %w", path, err)
	}
	info.ManufacturerID = trim(info.ManufacturerID)
	info.LibraryDescription = trim(info.LibraryDescription)
	return &Module{path: path, ctx: c, info: info, profile: profileFor(path, info), logins: newSlotLogins()}, nil
}

// Close releases the module; the last Close of a path finalises and unloads
// it. Tokens opened from it must be closed first.
func (m *Module) Close() error {
	if m == nil || m.shared == nil {
		return nil
	}
	modulesMu.Lock()
	defer modulesMu.Unlock()
	sm := m.shared
	m.shared = nil
	sm.refs--
	if sm.refs > 0 {
		return nil
	}
	for k, v := range modules {
		if v == sm {
			delete(modules, k)
		}
	}
	if err := sm.finalize(); err != nil {
		return fmt.Errorf("pkcs11: finalise module %s: %w", m.path, err)
	}
	return nil
}

// finalize undoes our C_Initialize, if it was ours, and unloads the library.
func (sm *sharedModule) finalize() error {
	var err error
	if sm.ownInit {
		err = sm.ctx.Finalize()
	}
	sm.ctx.Destroy()
	return err
}

// Info describes the module.
func (m *Module) Info() ModuleInfo {
	return ModuleInfo{
		Path:           m.path,
		Manufacturer:   m.info.ManufacturerID,
		Description:    m.info.LibraryDescription,
		LibraryVersion: fmt.Sprintf("%d.%d", m.info.LibraryVersion.Major, m.info.LibraryVersion.Minor),
		Cryptoki:       fmt.Sprintf("%d.%d", m.info.CryptokiVersion.Major, m.info.CryptokiVersion.Minor),
		Profile:        m.profile.Name,
	}
}

// Profile is the token profile chosen for this module.
func (m *Module) Profile() *Profile { return m.profile }

// TokenInfo is what a help desk needs to know about a token in a slot.
type TokenInfo struct {
	// Slot is the current slot ID. It is shown for diagnostics only: slot
	// IDs are not stable, select tokens by Label or Serial.
	Slot         uint
	Label        string
	Manufacturer string
	Model        string
	Serial       string
	Flags        TokenFlags
	MinPINLen    uint
	MaxPINLen    uint
	// FreePublicMemory and FreePrivateMemory are in bytes; -1 means the
	// token does not say.
	FreePublicMemory  int64
	FreePrivateMemory int64
}

// TokenFlags are the token's state flags a help desk acts on.
type TokenFlags struct {
	Initialized        bool // CKF_TOKEN_INITIALIZED
	UserPINInitialized bool // CKF_USER_PIN_INITIALIZED
	LoginRequired      bool // CKF_LOGIN_REQUIRED
	PINCountLow        bool // CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered since the last good one
	PINFinalTry        bool // CKF_USER_PIN_FINAL_TRY: one more wrong PIN locks it
	PINLocked          bool // CKF_USER_PIN_LOCKED
	PINToBeChanged     bool // CKF_USER_PIN_TO_BE_CHANGED
	SOPINCountLow      bool // CKF_SO_PIN_COUNT_LOW
	SOPINFinalTry      bool // CKF_SO_PIN_FINAL_TRY
	SOPINLocked        bool // CKF_SO_PIN_LOCKED
	WriteProtected     bool // CKF_WRITE_PROTECTED
	ProtectedAuthPath  bool // CKF_PROTECTED_AUTHENTICATION_PATH: PIN pad on the reader
	Raw                uint
}

func tokenFlags(f uint) TokenFlags {
	has := func(x uint) bool { return f&x != 0 }
	return TokenFlags{
		Initialized:        has(p11.CKF_TOKEN_INITIALIZED),
		UserPINInitialized: has(p11.CKF_USER_PIN_INITIALIZED),
		LoginRequired:      has(p11.CKF_LOGIN_REQUIRED),
		PINCountLow:        has(p11.CKF_USER_PIN_COUNT_LOW),
		PINFinalTry:        has(p11.CKF_USER_PIN_FINAL_TRY),
		PINLocked:          has(p11.CKF_USER_PIN_LOCKED),
		PINToBeChanged:     has(p11.CKF_USER_PIN_TO_BE_CHANGED),
		SOPINCountLow:      has(p11.CKF_SO_PIN_COUNT_LOW),
		SOPINFinalTry:      has(p11.CKF_SO_PIN_FINAL_TRY),
		SOPINLocked:        has(p11.CKF_SO_PIN_LOCKED),
		WriteProtected:     has(p11.CKF_WRITE_PROTECTED),
		ProtectedAuthPath:  has(p11.CKF_PROTECTED_AUTHENTICATION_PATH),
		Raw:                f,
	}
}

// Words lists the set flags as short words for a terminal.
func (f TokenFlags) Words() []string {
	var w []string
	add := func(b bool, s string) {
		if b {
			w = append(w, s)
		}
	}
	if !f.Initialized {
		// The PIN flags of a blank token mean nothing (SoftHSM's spare
		// slot claims SO-PIN-LOCKED).
		return []string{"NOT-INITIALIZED"}
	}
	add(!f.UserPINInitialized, "USER-PIN-NOT-SET")
	add(f.PINLocked, "PIN-LOCKED")
	add(f.PINFinalTry, "PIN-FINAL-TRY")
	add(f.PINCountLow, "PIN-COUNT-LOW")
	add(f.PINToBeChanged, "PIN-TO-BE-CHANGED")
	add(f.SOPINLocked, "SO-PIN-LOCKED")
	add(f.SOPINFinalTry, "SO-PIN-FINAL-TRY")
	add(f.SOPINCountLow, "SO-PIN-COUNT-LOW")
	add(f.WriteProtected, "WRITE-PROTECTED")
	add(f.ProtectedAuthPath, "PIN-PAD")
	if len(w) == 0 {
		w = append(w, "ok")
	}
	return w
}

// CK_UNAVAILABLE_INFORMATION as the binding hands it back (a CK_ULONG of all ones).
const unavailable = ^uint(0)

func convTokenInfo(slot uint, ti p11.TokenInfo) TokenInfo {
	mem := func(v uint) int64 {
		if v == unavailable || v == p11.CK_UNAVAILABLE_INFORMATION {
			return -1
		}
		return int64(v)
	}
	return TokenInfo{
		Slot:              slot,
		Label:             trim(ti.Label),
		Manufacturer:      trim(ti.ManufacturerID),
		Model:             trim(ti.Model),
		Serial:            trim(ti.SerialNumber),
		Flags:             tokenFlags(ti.Flags),
		MinPINLen:         ti.MinPinLen,
		MaxPINLen:         ti.MaxPinLen,
		FreePublicMemory:  mem(ti.FreePublicMemory),
		FreePrivateMemory: mem(ti.FreePrivateMemory),
	}
}

// Tokens lists the slots that hold a token. Uninitialised tokens (SoftHSM's
// spare free slot, a blank card) are listed too, flagged NOT-INITIALIZED.
func (m *Module) Tokens() ([]TokenInfo, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: list slots of %s: %w%s", m.path, err, initHint(err))
	}
	out := make([]TokenInfo, 0, len(slots))
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil {
			// A token pulled out between the two calls is not an error worth
			// failing the whole listing for.
			if errors.Is(err, p11.Error(p11.CKR_TOKEN_NOT_PRESENT)) {
				continue
			}
			return nil, fmt.Errorf("pkcs11: token info for slot %d of %s: %w", s, m.path, err)
		}
		out = append(out, convTokenInfo(s, ti))
	}
	return out, nil
}

// ErrNoToken is matched (errors.Is) by errors that mean no token fits.
var ErrNoToken = errors.New("no such token")

// FindToken returns the one token whose label or serial equals selector.
func (m *Module) FindToken(selector string) (TokenInfo, error) {
	if selector == "" {
		return TokenInfo{}, fmt.Errorf("pkcs11: no token given: name it by label or serial (imapgate token list shows them)")
	}
	all, err := m.Tokens()
	if err != nil {
		return TokenInfo{}, err
	}
	var hits []TokenInfo
	for _, t := range all {
		if t.Label == selector || (t.Serial != "" && t.Serial == selector) {
			hits = append(hits, t)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		if len(all) == 0 {
			return TokenInfo{}, fmt.Errorf("pkcs11: %w: no token is present in any slot of %s: insert the card or YubiKey (is pcscd running?)", ErrNoToken, m.path)
		}
		var names []string
		for _, t := range all {
			if t.Flags.Initialized {
				names = append(names, fmt.Sprintf("%q (serial %s)", t.Label, t.Serial))
			}
		}
		return TokenInfo{}, fmt.Errorf("pkcs11: %w: no token labelled or numbered %q in %s; present: %s", ErrNoToken, selector, m.path, strings.Join(names, ", "))
	default:
		return TokenInfo{}, fmt.Errorf("pkcs11: %d tokens match %q in %s: select by serial instead", len(hits), selector, m.path)
	}
}

func trim(s string) string { return strings.TrimRight(strings.TrimRight(s, "\x00"), " ") }
