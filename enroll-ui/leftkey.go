package enrollui

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/pkcs11"
)

// leftKey is the key a failed enrollment left on a token pulled out after
// the key was made and before its certificate was written: what the job
// knew of it (pkcs11.KeyLeftError), never a PIN. It lives in memory only:
// after a restart of the UI the Tokens page still flags the token
// (unfinished enrollment), and its next enrollment removes the key.
type leftKey struct {
	ID       []byte
	Public   crypto.PublicKey
	User     string // the interrupted enrollment's
	Serial   string // the certificate the CA issued for the key, if it had
	Operator string
	At       time.Time
}

// leftKeyView is a leftKey the token, back in the reader, still holds: its
// public key object (readable without a login) with the recorded CKA_ID and
// public key, and no certificate of that ID.
type leftKeyView struct {
	IDHex, User, Serial, Operator string
	At                            time.Time
}

// leftKeys are the recorded leftovers by token serial. One per token: the
// token's next enrollment removes any key without a certificate before it
// makes its own, so an older leftover never outlives a newer one.
type leftKeys struct {
	mu sync.Mutex
	m  map[string]leftKey
}

func (l *leftKeys) put(serial string, k leftKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]leftKey{}
	}
	l.m[serial] = k
}

func (l *leftKeys) get(serial string) (leftKey, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.m[serial]
	return k, ok
}

// drop forgets the token's leftover if it is still key id.
func (l *leftKeys) drop(serial string, id []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k, ok := l.m[serial]; ok && bytes.Equal(k.ID, id) {
		delete(l.m, serial)
	}
}

// seen checks the recorded leftover against the token's objects as read
// without a login (certificates and public keys). It is shown while the
// token holds the key's public key object and no certificate of its ID;
// otherwise it is forgotten: the key is gone (enrolled again, wiped) or has
// its certificate after all, and is no leftover to remove.
func (l *leftKeys) seen(serial string, objs []pkcs11.Object) (*leftKeyView, string) {
	k, ok := l.get(serial)
	if !ok {
		return nil, ""
	}
	var pub bool
	for _, o := range objs {
		if !bytes.Equal(o.ID, k.ID) {
			continue
		}
		switch o.Class {
		case pkcs11.ClassCertificate:
			l.drop(serial, k.ID)
			return nil, "a certificate with its ID is on the token"
		case pkcs11.ClassPublicKey:
			pub = pub || o.Public != nil && publicEqual(o.Public, k.Public)
		}
	}
	if !pub {
		l.drop(serial, k.ID)
		return nil, "it is no longer on the token"
	}
	return &leftKeyView{IDHex: hex.EncodeToString(k.ID), User: k.User, Serial: k.Serial, Operator: k.Operator, At: k.At}, ""
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// recordLeftKey keeps what a failed enrollment knows of the key it could
// not remove, and says whether the UI can offer to remove it.
func (s *Server) recordLeftKey(err error, in enrollInput, caSerial string) bool {
	var kl *pkcs11.KeyLeftError
	if !errors.As(err, &kl) || kl.Public == nil || s.mod.Profile().FixedKeyID != nil {
		return false
	}
	s.left.put(in.token.Serial, leftKey{ID: kl.ID, Public: kl.Public, User: in.user, Serial: caSerial, Operator: in.operator, At: time.Now()})
	return true
}

type leftoverData struct {
	Token tokenView
	Key   *leftKeyView
}

// leftoverPage asks for the PIN that removing the leftover key needs.
func (s *Server) leftoverPage(c *gin.Context) {
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	p := page{Title: "Leftover key on " + t.Label, Nav: "tokens", Data: leftoverData{Token: t, Key: t.LeftKey}}
	if t.LeftKey == nil {
		p.Notice = "This token holds no leftover key of an interrupted enrollment that this UI recorded. Nothing to do."
	}
	s.render(c, "leftover", p)
}

// leftoverRemove removes the recorded leftover key, and only it, with the
// PIN typed now (a private key is visible, and removable, only after a user
// login); the PIN is wiped at once.
func (s *Server) leftoverRemove(c *gin.Context) {
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	fail := func(status int, msg string, t tokenView) {
		s.renderStatus(c, status, "leftover", page{Title: "Leftover key on " + t.Label, Nav: "tokens", Error: msg, Data: leftoverData{Token: t, Key: t.LeftKey}})
	}
	k, recorded := s.left.get(t.Serial)
	if t.LeftKey == nil || !recorded {
		fail(http.StatusNotFound, "This token holds no leftover key of an interrupted enrollment that this UI recorded: nothing was removed.", t)
		return
	}
	pinS := c.PostForm("pin")
	if pinS == "" {
		fail(http.StatusBadRequest, "Type the token's PIN: the key can be removed only after a login. Nothing was removed.", t)
		return
	}
	if !s.busy.acquire(t.Serial) {
		fail(http.StatusConflict, "Another action is running on this token. Wait for it to finish.", t)
		return
	}
	pin := pkcs11.NewPIN(pinS)
	defer pin.Wipe()
	n, err := func() (int, error) {
		defer s.busy.release(t.Serial)
		tok, err := s.mod.OpenToken(t.Serial)
		if err != nil {
			return 0, err
		}
		defer tok.Close()
		return tok.RemoveLeftKey(pin, k.ID, k.Public)
	}()
	s.tokens.invalidate(t.Serial)
	res, reason := result(err)
	if err == nil {
		reason = fmt.Sprintf("key %x left by an interrupted enrollment (%d objects removed)", k.ID, n)
	}
	s.audit(action{Operator: sessionOf(c).operator, Action: "remove-leftover-key", User: k.User, Serial: k.Serial,
		TokenSerial: t.Serial, Result: res, Reason: reason})
	t2, found := s.tokens.find(t.Serial)
	if !found {
		t2 = t
	}
	if err != nil {
		msg := explain(err) + " Nothing was removed."
		if errors.Is(err, pkcs11.ErrNotLeftKey) {
			s.left.drop(t.Serial, k.ID)
			msg = "The token does not hold the leftover key alone under its ID, so nothing was removed: " + err.Error() + ". Check the token (imapgate token show) before wiping anything."
		}
		fail(statusFor(err), msg, t2)
		return
	}
	s.left.drop(t.Serial, k.ID)
	done := fmt.Sprintf("The leftover key %x of the interrupted enrollment was removed from token %s (%d objects: its private and public key); nothing else on the token was touched.", k.ID, t.Label, n)
	if n == 0 {
		done = fmt.Sprintf("The leftover key %x was no longer on token %s: nothing needed removing.", k.ID, t.Label)
	}
	if k.Serial != "" {
		done += " The CA had issued certificate " + k.Serial + " for that key: it never reached the token, so revoke it (reason superseded) on the Revoke page, or ask an administrator to."
	}
	s.render(c, "leftover", page{Title: "Leftover key on " + t.Label, Nav: "tokens", Notice: done, Data: leftoverData{Token: t2}})
}
