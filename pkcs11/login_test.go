package pkcs11

import (
	"errors"
	"strings"
	"testing"
)

func TestLogin(t *testing.T) {
	s := newSoftToken(t)
	const wrong = "999999"
	cases := []struct {
		name    string
		pin     *PIN
		so      bool
		wantErr error
		wantMsg string
	}{
		{name: "wrong user PIN", pin: NewPIN(wrong), wantErr: ErrPINIncorrect, wantMsg: "tries left"},
		{name: "wrong SO PIN", pin: NewPIN(wrong), so: true, wantErr: ErrPINIncorrect, wantMsg: "SO PIN"},
		{name: "no PIN", pin: nil, wantErr: errNoPIN},
		{name: "user PIN", pin: s.pin()},
		{name: "SO PIN", pin: s.soPIN(), so: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.so {
				err = s.tok.LoginSO(c.pin)
			} else {
				err = s.tok.Login(c.pin)
			}
			defer s.tok.Logout()
			if c.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("got %v, want %v", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("error %q does not say %q", err, c.wantMsg)
			}
			if strings.Contains(err.Error(), wrong) {
				t.Fatalf("error shows the PIN: %q", err)
			}
		})
	}
	// SoftHSM flags a wrong PIN as COUNT_LOW until the next good login
	// (it never locks); the help desk listing must show it.
	_ = s.tok.Login(NewPIN(wrong))
	ti, err := s.tok.Refresh()
	if err != nil {
		t.Fatal(err)
	}
	if !ti.Flags.PINCountLow {
		t.Errorf("PIN-COUNT-LOW not reported after a wrong PIN: %+v", ti.Flags)
	}
	if err := s.tok.Login(s.pin()); err != nil {
		t.Fatal(err)
	}
	if ti, _ := s.tok.Refresh(); ti.Flags.PINCountLow {
		t.Errorf("PIN-COUNT-LOW still set after a good login")
	}
}

func TestChangeAndResetPIN(t *testing.T) {
	s := newSoftToken(t)
	// Change as user.
	if err := s.tok.ChangePIN(s.pin(), NewPIN("24682468")); err != nil {
		t.Fatal(err)
	}
	s.tok.Logout()
	if err := s.tok.Login(s.pin()); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("old PIN after change: got %v", err)
	}
	if err := s.tok.Login(NewPIN("24682468")); err != nil {
		t.Fatalf("new PIN after change: %v", err)
	}
	s.tok.Logout()
	// Too short for the token (SoftHSM: 4..255).
	if err := s.tok.ChangePIN(NewPIN("24682468"), NewPIN("12")); !errors.Is(err, ErrPINInvalid) {
		t.Fatalf("short PIN: got %v", err)
	}
	// Reset with the SO PIN, as the help desk does for a forgotten PIN.
	if err := s.tok.ResetPIN(NewPIN("00000000"), NewPIN("13571357")); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("reset with wrong SO PIN: got %v", err)
	}
	if err := s.tok.ResetPIN(s.soPIN(), NewPIN("13571357")); err != nil {
		t.Fatal(err)
	}
	if err := s.tok.Login(NewPIN("13571357")); err != nil {
		t.Fatalf("PIN set by SO: %v", err)
	}
}
