package enrollui

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/pkcs11"
)

type pinData struct {
	Token tokenView
}

func (s *Server) pinPage(c *gin.Context) {
	if c.Query("token") == "" {
		d, problem := s.tokensData()
		s.render(c, "pick", page{Title: "PIN: pick a token", Nav: "pin", Error: problem, Data: pickData{Tokens: d.Tokens, Next: "/pin"}})
		return
	}
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	s.render(c, "pin", page{Title: "PIN of " + t.Label, Nav: "pin", Data: pinData{Token: t}})
}

// pinChange changes the user PIN with the current one.
func (s *Server) pinChange(c *gin.Context) {
	s.pinAction(c, "pin-change", "current PIN", func(tok *pkcs11.Token, auth, newPIN *pkcs11.PIN) error {
		return tok.ChangePIN(auth, newPIN)
	}, "The PIN was changed. Give the token back to its user.")
}

// pinUnblock sets a new user PIN with the SO PIN (YubiKey: the PUK).
func (s *Server) pinUnblock(c *gin.Context) {
	s.pinAction(c, "pin-unblock", "SO PIN or PUK", func(tok *pkcs11.Token, auth, newPIN *pkcs11.PIN) error {
		return tok.ResetPIN(auth, newPIN)
	}, "The PIN was reset and the token is unblocked. Give the token back to its user.")
}

func (s *Server) pinAction(c *gin.Context, act, authWhat string, do func(tok *pkcs11.Token, auth, newPIN *pkcs11.PIN) error, done string) {
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	fail := func(status int, msg string) {
		s.renderStatus(c, status, "pin", page{Title: "PIN of " + t.Label, Nav: "pin", Error: msg, Data: pinData{Token: t}})
	}
	authS := c.PostForm("auth")
	if authS == "" {
		fail(http.StatusBadRequest, "Type the "+authWhat+". Nothing was changed.")
		return
	}
	if err := s.checkNewPIN(c.PostForm("new_pin"), c.PostForm("new_pin2")); err != nil {
		fail(http.StatusBadRequest, err.Error()+" Nothing was changed.")
		return
	}
	if !s.busy.acquire(t.Serial) {
		fail(http.StatusConflict, "Another action is running on this token. Wait for it to finish.")
		return
	}
	auth, newPIN := pkcs11.NewPIN(authS), pkcs11.NewPIN(c.PostForm("new_pin"))
	defer auth.Wipe()
	defer newPIN.Wipe()
	err := func() error {
		// Free again before the page below reads the token's state.
		defer s.busy.release(t.Serial)
		tok, err := s.mod.OpenToken(t.Serial)
		if err != nil {
			return err
		}
		defer tok.Close()
		return do(tok, auth, newPIN)
	}()
	s.tokens.invalidate(t.Serial)
	op := sessionOf(c).operator
	res, reason := result(err)
	s.audit(action{Operator: op, Action: act, TokenSerial: t.Serial, User: firstUser(t), Result: res, Reason: reason})
	if err != nil {
		fail(statusFor(err), explain(err)+" The PIN was not changed.")
		return
	}
	t2, _ := s.tokens.find(t.Serial)
	if t2.Serial == "" {
		t2 = t
	}
	s.render(c, "pin", page{Title: "PIN of " + t.Label, Nav: "pin", Notice: done, Data: pinData{Token: t2}})
}

func firstUser(t tokenView) string {
	if len(t.Creds) > 0 {
		return t.Creds[0].User
	}
	return ""
}

// statusFor maps an action's error to an HTTP status for the page.
func statusFor(err error) int {
	switch {
	case errors.Is(err, pkcs11.ErrPINIncorrect), errors.Is(err, pkcs11.ErrPINInvalid):
		return http.StatusBadRequest
	case errors.Is(err, pkcs11.ErrPINLocked):
		return http.StatusLocked
	case errors.Is(err, pkcs11.ErrNoToken), errors.Is(err, pkcs11.ErrTokenGone):
		return http.StatusNotFound
	case errors.Is(err, pkcs11.ErrTokenFull):
		return http.StatusInsufficientStorage
	}
	return http.StatusBadGateway
}

// explain leads a token or CA error with what the person at the desk does.
func explain(err error) string {
	switch {
	case errors.Is(err, pkcs11.ErrPINLocked):
		return "The PIN is locked. Unblock it with the SO PIN (YubiKey: the PUK) on the PIN page; never guess. Details: " + err.Error() + "."
	case errors.Is(err, pkcs11.ErrPINFinalTry):
		return "Wrong PIN, and the token has one try left: one more wrong PIN locks it. Check the PIN with the user before anyone types it again, or set a new one with the SO PIN (YubiKey: the PUK) on the PIN page. Details: " + err.Error() + "."
	case errors.Is(err, pkcs11.ErrPINIncorrect):
		return "Wrong PIN. Ask the user to type it again carefully; after too many wrong PINs the token locks. Details: " + err.Error() + "."
	case errors.Is(err, pkcs11.ErrTokenGone), errors.Is(err, pkcs11.ErrNoToken):
		return "The token was pulled out or is not in the reader. Insert it and start again. Details: " + err.Error() + "."
	case errors.Is(err, pkcs11.ErrTokenFull):
		return "The token is full. Wipe old objects (imapgate token wipe) or use another token. Details: " + err.Error() + "."
	case errors.Is(err, pkcs11.ErrPINInvalid):
		return "The token does not accept this PIN. Details: " + err.Error() + "."
	}
	return err.Error() + "."
}
