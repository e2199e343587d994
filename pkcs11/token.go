package pkcs11

import (
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// Token is one open token: a read-write session on the slot that holds it.
// All calls into the session are serialised by one mutex, because a PKCS#11
// session runs one operation at a time (SignInit+Sign must not interleave);
// this makes a Token, and the Signers it hands out, safe for concurrent use.
type Token struct {
	mod *Module
	// info is what the token said at open; it never changes, so anything
	// may read it without the lock. latest is the last Refresh.
	info TokenInfo

	mu       sync.Mutex
	sh       p11.SessionHandle
	closed   bool
	loggedIn uint // p11.CKU_USER, p11.CKU_SO, or noLogin
	latest   TokenInfo
}

const noLogin = ^uint(0)

// OpenToken opens a read-write session on the token whose label or serial is
// selector.
func (m *Module) OpenToken(selector string) (*Token, error) {
	ti, err := m.FindToken(selector)
	if err != nil {
		return nil, err
	}
	if !ti.Flags.Initialized {
		return nil, fmt.Errorf("pkcs11: token %s is not initialised: initialise it with the card vendor's tool first", ti.Label)
	}
	sh, err := m.ctx.OpenSession(ti.Slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return nil, tokenError(ti.Label, "open session", err)
	}
	return &Token{mod: m, info: ti, latest: ti, sh: sh, loggedIn: noLogin}, nil
}

// Info returns the token's information as last read (at open or by Refresh).
func (t *Token) Info() TokenInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.latest
}

// Label is the token's label.
func (t *Token) Label() string { return t.info.Label }

// Profile is the module's token profile.
func (t *Token) Profile() *Profile { return t.mod.profile }

// Refresh re-reads the token's flags (after a failed login, for example).
func (t *Token) Refresh() (TokenInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refreshLocked()
}

func (t *Token) refreshLocked() (TokenInfo, error) {
	ti, err := t.mod.ctx.GetTokenInfo(t.info.Slot)
	if err != nil {
		return t.latest, tokenError(t.info.Label, "read token info", err)
	}
	t.latest = convTokenInfo(t.info.Slot, ti)
	return t.latest, nil
}

// Close logs out and closes the session.
func (t *Token) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	_ = t.logoutLocked()
	if err := t.mod.ctx.CloseSession(t.sh); err != nil && !errors.Is(err, p11.Error(p11.CKR_SESSION_HANDLE_INVALID)) {
		return tokenError(t.info.Label, "close session", err)
	}
	return nil
}

// Login logs in as the user. The PIN is checked even if the token is
// already logged in, and it is not kept.
func (t *Token) Login(pin *PIN) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loginLocked(p11.CKU_USER, pin, false)
}

// LoginSO logs in as the security officer (for ykcs11: with the PIV
// management key, 48 hex digits).
func (t *Token) LoginSO(soPIN *PIN) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loginLocked(p11.CKU_SO, soPIN, false)
}

// Logout ends the login, if any.
func (t *Token) Logout() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.logoutLocked()
}

func who(userType uint) string {
	if userType == p11.CKU_SO {
		return "SO"
	}
	return "user"
}

// loginLocked logs in. allowExpired accepts CKR_PIN_EXPIRED, which leaves
// the session logged in for C_SetPIN only (ChangePIN).
func (t *Token) loginLocked(userType uint, pin *PIN, allowExpired bool) error {
	if t.closed {
		return fmt.Errorf("pkcs11: token %s: closed", t.info.Label)
	}
	if pin.Empty() {
		return fmt.Errorf("pkcs11: token %s: log in as %s: %w", t.info.Label, who(userType), errNoPIN)
	}
	// Already logged in, maybe with another PIN: log out and in again, so
	// that a Login always checks the PIN it is given.
	if t.loggedIn != noLogin {
		if err := t.logoutLocked(); err != nil {
			return err
		}
	}
	if !t.mod.logins.claim(t.info.Slot, t) {
		return fmt.Errorf("pkcs11: token %s: another session of this process is logged in to it (PKCS#11 logins are per process): close that one first", t.info.Label)
	}
	err := t.mod.ctx.Login(t.sh, userType, pin.unsafeString())
	switch {
	case err == nil:
		t.loggedIn = userType
		return nil
	case errors.Is(err, p11.Error(p11.CKR_PIN_EXPIRED)) && userType == p11.CKU_USER && allowExpired:
		// The session is logged in so that C_SetPIN can replace the PIN.
		t.loggedIn = userType
		return nil
	}
	if errors.Is(err, p11.Error(p11.CKR_PIN_EXPIRED)) {
		// The token logged in for C_SetPIN only; undo it.
		_ = t.mod.ctx.Logout(t.sh)
	}
	t.mod.logins.release(t.info.Slot, t)
	switch {
	case errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)):
		// Someone else in this process (another library context on the
		// same module) holds the login: the PIN was not checked, and
		// using that login would be using someone else's.
		return fmt.Errorf("pkcs11: token %s: already logged in by other code in this process, so the PIN could not be checked: close it and retry: %w", t.info.Label, err)
	case errors.Is(err, p11.Error(p11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN)):
		// Another application (or another Token on this module) holds a
		// login of the other type; PKCS#11 logins are per application.
		return fmt.Errorf("pkcs11: token %s: already logged in as the other user type by another session: close it and retry: %w", t.info.Label, err)
	}
	ti, rerr := t.refreshLocked()
	if rerr != nil {
		return pinError(t.info.Label, who(userType), err, nil)
	}
	return pinError(t.info.Label, who(userType), err, &ti)
}

func (t *Token) logoutLocked() error {
	if t.loggedIn == noLogin {
		return nil
	}
	t.loggedIn = noLogin
	defer t.mod.logins.release(t.info.Slot, t)
	if err := t.mod.ctx.Logout(t.sh); err != nil && !errors.Is(err, p11.Error(p11.CKR_USER_NOT_LOGGED_IN)) {
		return tokenError(t.info.Label, "logout", err)
	}
	return nil
}

// ChangePIN changes the user PIN from old to new (C_SetPIN in a user
// session). It logs in with old first when needed.
func (t *Token) ChangePIN(old, newPIN *PIN) error {
	if err := t.checkNewPIN(newPIN); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loginLocked(p11.CKU_USER, old, true); err != nil {
		return err
	}
	if err := t.mod.ctx.SetPIN(t.sh, old.unsafeString(), newPIN.unsafeString()); err != nil {
		return pinError(t.info.Label, "user", err, &t.latest)
	}
	return nil
}

// ResetPIN sets a new user PIN with the SO's authority — the way out of a
// locked PIN. Generic tokens use C_InitPIN after an SO login; ykcs11 has no
// C_InitPIN and unblocks with the PUK instead (soPIN is then the PUK).
func (t *Token) ResetPIN(soPIN, newPIN *PIN) error {
	if err := t.checkNewPIN(newPIN); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mod.profile.UnblockWithPUK {
		// ykcs11: C_SetPIN(old="puk:<PUK>", new="pin:<new PIN>") in a
		// session with no login unblocks the PIV PIN.
		if err := t.logoutLocked(); err != nil {
			return err
		}
		oldArg, newArg := soPIN.withPrefix("puk:"), newPIN.withPrefix("pin:")
		defer oldArg.Wipe()
		defer newArg.Wipe()
		if err := t.mod.ctx.SetPIN(t.sh, oldArg.unsafeString(), newArg.unsafeString()); err != nil {
			ti, _ := t.refreshLocked()
			return pinError(t.info.Label, "PUK", err, &ti)
		}
		return nil
	}
	if err := t.loginLocked(p11.CKU_SO, soPIN, false); err != nil {
		return err
	}
	defer t.logoutLocked()
	if err := t.mod.ctx.InitPIN(t.sh, newPIN.unsafeString()); err != nil {
		if errors.Is(err, p11.Error(p11.CKR_PIN_LEN_RANGE)) || errors.Is(err, p11.Error(p11.CKR_PIN_INVALID)) {
			return pinError(t.info.Label, "new user", err, &t.latest)
		}
		return tokenError(t.info.Label, "set a new user PIN (C_InitPIN)", err)
	}
	return nil
}

func (t *Token) checkNewPIN(p *PIN) error {
	if p.Empty() {
		return fmt.Errorf("pkcs11: token %s: new PIN: %w", t.info.Label, errNoPIN)
	}
	if mn := t.info.MinPINLen; mn > 0 && uint(p.Len()) < mn {
		return fmt.Errorf("pkcs11: token %s: %w: the new PIN is too short: at least %d characters", t.info.Label, ErrPINInvalid, mn)
	}
	if mx := t.info.MaxPINLen; mx > 0 && mx != unavailable && uint(p.Len()) > mx {
		return fmt.Errorf("pkcs11: token %s: %w: the new PIN is too long: at most %d characters", t.info.Label, ErrPINInvalid, mx)
	}
	return nil
}
