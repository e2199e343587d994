package testenv

import (
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// TestP11Fault holds p11fault to what its comment and docs/tokens.md say,
// call by call through the raw PKCS#11 API.
func TestP11Fault(t *testing.T) {
	tok := SoftHSM(t)
	f := NewP11Fault(t, tok)
	c := p11.New(f.Module)
	if c == nil {
		t.Fatalf("load %s", f.Module)
	}
	defer c.Destroy()
	if err := c.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer c.Finalize()
	slots, err := c.GetSlotList(true)
	if err != nil || len(slots) != 2 { // the token and SoftHSM2's spare slot
		t.Fatalf("slots %v, %v", slots, err)
	}
	var slot uint
	for _, s := range slots {
		if ti, _ := c.GetTokenInfo(s); ti.SerialNumber == tok.Serial {
			slot = s
		}
	}
	open := func() p11.SessionHandle {
		t.Helper()
		sh, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		return sh
	}
	is := func(err error, rv uint) bool { return rv == p11.CKR_OK && err == nil || errors.Is(err, p11.Error(rv)) }
	flags := func() uint {
		t.Helper()
		ti, err := c.GetTokenInfo(slot)
		if err != nil {
			t.Fatal(err)
		}
		return ti.Flags
	}
	sh := open()

	// The PIN modes, one login after another.
	for _, step := range []struct {
		name  string
		fault *Fault // set before the step, if not nil
		who   uint
		pin   string
		rv    uint
		flag  uint // flags the token shows after the step
	}{
		{"count low: wrong PIN", &Fault{Mode: FaultPINCountLow}, p11.CKU_USER, "000000", p11.CKR_PIN_INCORRECT, p11.CKF_USER_PIN_FINAL_TRY},
		{"final try: wrong PIN", nil, p11.CKU_USER, "000000", p11.CKR_PIN_INCORRECT, p11.CKF_USER_PIN_LOCKED},
		{"locked: right PIN", nil, p11.CKU_USER, tok.PIN, p11.CKR_PIN_LOCKED, p11.CKF_USER_PIN_LOCKED},
		{"locked: the SO logs in", nil, p11.CKU_SO, tok.SOPIN, p11.CKR_OK, p11.CKF_USER_PIN_LOCKED},
	} {
		if step.fault != nil {
			f.Set(t, *step.fault)
		}
		if err := c.Login(sh, step.who, step.pin); !is(err, step.rv) {
			t.Fatalf("%s: %v, want %#x", step.name, err, step.rv)
		}
		if fl := flags(); fl&step.flag == 0 {
			t.Fatalf("%s: flags %#x lack %#x", step.name, fl, step.flag)
		}
	}
	if err := c.InitPIN(sh, tok.PIN); err != nil {
		t.Fatal(err)
	}
	c.Logout(sh)
	if fl := flags(); fl&(p11.CKF_USER_PIN_LOCKED|p11.CKF_USER_PIN_FINAL_TRY) != 0 {
		t.Fatalf("C_InitPIN left the flags %#x", fl)
	}
	f.Set(t, Fault{Mode: FaultPINExpired})
	if err := c.Login(sh, p11.CKU_USER, tok.PIN); !is(err, p11.CKR_PIN_EXPIRED) || flags()&p11.CKF_USER_PIN_TO_BE_CHANGED == 0 {
		t.Fatalf("expired: %v, flags %#x", err, flags())
	}
	if err := c.SetPIN(sh, tok.PIN, tok.PIN); err != nil || flags()&p11.CKF_USER_PIN_TO_BE_CHANGED != 0 {
		t.Fatalf("C_SetPIN of an expired PIN: %v, flags %#x", err, flags())
	}

	// A full token (logged in: SoftHSM2 creates objects only then).
	f.Set(t, Fault{Mode: FaultMemoryFull, On: []string{"C_CreateObject"}})
	data := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA), p11.NewAttribute(p11.CKA_TOKEN, false)}
	if _, err := c.CreateObject(sh, data); !is(err, p11.CKR_DEVICE_MEMORY) {
		t.Fatalf("memory_full: C_CreateObject %v", err)
	}
	if ti, _ := c.GetTokenInfo(slot); ti.FreePublicMemory != 0 {
		t.Fatalf("memory_full: %d bytes free", ti.FreePublicMemory)
	}
	f.Clear(t)
	if _, err := c.CreateObject(sh, data); err != nil {
		t.Fatalf("cleared: C_CreateObject %v", err)
	}
	c.Logout(sh)

	// Pulled out after exactly two calls of C_GetSessionInfo; the others
	// do not count.
	f.Set(t, Fault{Mode: FaultRemoveAfter, After: 2, On: []string{"C_GetSessionInfo"}, RV: p11.CKR_SESSION_HANDLE_INVALID})
	for i := 0; i < 2; i++ {
		if _, err := c.GetSessionInfo(sh); err != nil {
			t.Fatalf("call %d before the removal: %v", i+1, err)
		}
		if _, err := c.GetTokenInfo(slot); err != nil {
			t.Fatalf("an uncounted call: %v", err)
		}
	}
	if _, err := c.GetSessionInfo(sh); !is(err, p11.CKR_SESSION_HANDLE_INVALID) {
		t.Fatalf("the call after the removal: %v", err)
	}
	if _, err := c.GetTokenInfo(slot); !is(err, p11.CKR_TOKEN_NOT_PRESENT) {
		t.Fatalf("a slot call with the token out: %v", err)
	}
	if _, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION); !is(err, p11.CKR_TOKEN_NOT_PRESENT) {
		t.Fatalf("C_OpenSession with the token out: %v", err)
	}
	if present, _ := c.GetSlotList(true); len(present) != 0 {
		t.Fatalf("C_GetSlotList(TRUE) with the token out: %v", present)
	}
	if all, _ := c.GetSlotList(false); len(all) != 2 {
		t.Fatalf("C_GetSlotList(FALSE) with the token out: %v (the reader stays)", all)
	}
	if si, err := c.GetSlotInfo(slot); err != nil || si.Flags&p11.CKF_TOKEN_PRESENT != 0 {
		t.Fatalf("C_GetSlotInfo with the token out: %#x, %v", si.Flags, err)
	}
	// Put back: listed again, but the session did not survive.
	f.Clear(t)
	if present, _ := c.GetSlotList(true); len(present) != 2 {
		t.Fatalf("put back: slots %v", present)
	}
	if _, err := c.GetSessionInfo(sh); !is(err, p11.CKR_SESSION_HANDLE_INVALID) {
		t.Fatalf("a session from before the removal: %v", err)
	}

	// Hidden at once, with the default answer; then inserted.
	sh = open()
	f.Set(t, Fault{Mode: FaultHidden})
	if present, _ := c.GetSlotList(true); len(present) != 0 {
		t.Fatalf("hidden: slots %v", present)
	}
	if _, err := c.GetSessionInfo(sh); !is(err, p11.CKR_DEVICE_REMOVED) {
		t.Fatalf("hidden: a session call %v", err)
	}
	f.Clear(t)
	sh = open()
	if _, err := c.GetSessionInfo(sh); err != nil {
		t.Fatalf("inserted: %v", err)
	}
}
