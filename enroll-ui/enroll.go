package enrollui

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/pkcs11"
)

type pickData struct {
	Tokens []tokenView
	Next   string // the page a pick leads to
}

type enrollData struct {
	Token    tokenView
	User     string
	KeyType  string
	KeyTypes []string
	Existing []certView // the user's certificates at the CA
	Replace  bool
	Revoke   bool
}

// receipt is what the help desk prints for the user.
type receipt struct {
	User, Serial, TokenLabel, TokenSerial, KeyType, Label string
	NotBefore, NotAfter, Issued                           time.Time
	Operator                                              string
	Replaced                                              []string // serial (user)
	Revoked                                               []string
	NotRevoked                                            []string // replaced serials still to revoke
	Warnings                                              []string
	ClientModule, RootsURL                                string
}

func (s *Server) enrollPick(c *gin.Context) {
	if c.Query("token") == "" {
		d, problem := s.tokensData()
		s.render(c, "pick", page{Title: "Enroll: pick a token", Nav: "enroll", Error: problem, Data: pickData{Tokens: d.Tokens, Next: "/enroll"}})
		return
	}
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	s.render(c, "enroll_user", page{Title: "Enroll: the user", Nav: "enroll", Data: enrollData{Token: t}})
}

// enrollUser checks the mailbox and asks the CA what it has for the user, so
// an unreachable CA shows before anything touches the token.
func (s *Server) enrollUser(c *gin.Context) {
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	d := enrollData{Token: t, KeyType: string(pkcs11.KeyECP256), KeyTypes: s.keyTypes()}
	user, err := s.checkMailbox(c.PostForm("user"))
	d.User = user
	if err != nil {
		s.renderStatus(c, http.StatusBadRequest, "enroll_user", page{Title: "Enroll: the user", Nav: "enroll", Error: err.Error(), Data: d})
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 20*time.Second)
	defer cancel()
	certs, err := s.agent.List(ctx, user)
	if err != nil {
		s.renderStatus(c, http.StatusBadGateway, "enroll_user", page{Title: "Enroll: the user", Nav: "enroll",
			Error: "The CA did not answer, so nothing was written to the token: " + err.Error() + ". Check the network and the Status page, then try again.", Data: d})
		return
	}
	for _, cert := range certs {
		d.Existing = append(d.Existing, viewCert(cert))
	}
	s.render(c, "enroll_pin", page{Title: "Enroll: PIN and key", Nav: "enroll", Data: d})
}

// keyTypes are the key types the module's profile supports, the default first.
func (s *Server) keyTypes() []string {
	var out []string
	for _, kt := range s.mod.Profile().KeyTypes {
		out = append(out, string(kt))
	}
	return out
}

// enrollStart checks the whole form, then starts the enrollment job.
func (s *Server) enrollStart(c *gin.Context) {
	t, ok := s.tokenParam(c)
	if !ok {
		return
	}
	d := enrollData{Token: t, KeyType: c.PostForm("key_type"), KeyTypes: s.keyTypes(),
		Replace: c.PostForm("replace") == "yes", Revoke: c.PostForm("revoke_old") == "yes"}
	bad := func(status int, msg string) {
		s.renderStatus(c, status, "enroll_pin", page{Title: "Enroll: PIN and key", Nav: "enroll", Error: msg + " Nothing was written to the token.", Data: d})
	}
	user, err := s.checkMailbox(c.PostForm("user"))
	d.User = user
	if err != nil {
		bad(http.StatusBadRequest, err.Error())
		return
	}
	kt, err := pkcs11.ParseKeyType(d.KeyType)
	if err != nil || !slices.Contains(d.KeyTypes, string(kt)) {
		bad(http.StatusBadRequest, "Pick a key type from the list (EC P-256 unless the user's software needs RSA).")
		return
	}
	cur, so, mgmt := c.PostForm("pin"), c.PostForm("so_pin"), c.PostForm("mgmt_key")
	switch {
	case t.PINLocked && so == "":
		bad(http.StatusLocked, "The token's PIN is locked: type the SO PIN (YubiKey: the PUK) to set the new PIN.")
		return
	case cur == "" && so == "":
		bad(http.StatusBadRequest, "Type the token's current PIN (for a new token, its factory PIN), or the SO PIN if it is forgotten.")
		return
	case t.SOForWrite && mgmt == "":
		bad(http.StatusBadRequest, "This token (a YubiKey) needs its PIV management key to store a key and certificate.")
		return
	}
	if err := s.checkNewPIN(c.PostForm("new_pin"), c.PostForm("new_pin2")); err != nil {
		bad(http.StatusBadRequest, err.Error())
		return
	}
	if len(t.Creds) > 0 && !d.Replace {
		bad(http.StatusConflict, fmt.Sprintf("This token holds the credential of %s (serial %s). Tick “Replace it” to confirm it is to be replaced.", t.Creds[0].User, t.Creds[0].Serial))
		return
	}
	if d.Revoke && s.admin == nil {
		bad(http.StatusForbidden, "This PC has no admin credential, so it cannot revoke the old certificate: untick “revoke” and ask an administrator.")
		return
	}
	if !s.busy.acquire(t.Serial) {
		bad(http.StatusConflict, "Another action is running on this token. Wait for it to finish.")
		return
	}
	// The PINs go to the job and are wiped when it ends; nothing else keeps them.
	in := enrollInput{token: t, user: user, kt: kt, replace: d.Replace, revoke: d.Revoke, operator: sessionOf(c).operator,
		newPIN: pkcs11.NewPIN(c.PostForm("new_pin"))}
	if so != "" {
		in.soPIN = pkcs11.NewPIN(so)
	} else {
		in.curPIN = pkcs11.NewPIN(cur)
	}
	if mgmt != "" {
		in.mgmt = pkcs11.NewPIN(mgmt)
	}
	steps := []jobStep{
		{Key: "pin", Name: "New PIN set", State: stepTodo},
		{Key: "key", Name: "Key generated on the token", State: stepTodo},
		{Key: "csr", Name: "Certificate request signed on the token", State: stepTodo},
		{Key: "ca", Name: "Certificate from the CA", State: stepTodo},
		{Key: "write", Name: "Certificate and its chain written to the token", State: stepTodo},
	}
	if d.Revoke {
		steps = append(steps, jobStep{Key: "revoke", Name: "Old certificate revoked", State: stepTodo})
	}
	j := s.jobs.start(sessionOf(c).id, steps, func() {
		s.busy.release(t.Serial)
		s.tokens.invalidate(t.Serial)
	}, func(j *job) { s.runEnroll(j, in) })
	c.Redirect(http.StatusSeeOther, "/enroll/job/"+j.id)
}

type enrollInput struct {
	token                       tokenView
	user                        string
	kt                          pkcs11.KeyType
	replace, revoke             bool
	operator                    string
	curPIN, soPIN, newPIN, mgmt *pkcs11.PIN
}

func (in *enrollInput) wipe() {
	for _, p := range []*pkcs11.PIN{in.curPIN, in.soPIN, in.newPIN, in.mgmt} {
		p.Wipe()
	}
}

// runEnroll is the job: set the new PIN, enroll, revoke the replaced
// certificate. pkcs11.Token.Enroll removes the new key again if anything
// after its generation fails, so a failed job leaves no half credential.
func (s *Server) runEnroll(j *job, in enrollInput) {
	defer in.wipe()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := action{Operator: in.operator, Action: "enroll", User: in.user, TokenSerial: in.token.Serial}
	var caSerial string // set once the CA issued
	fail := func(err error, pinChanged bool) {
		msg := explain(err)
		if pinChanged {
			msg += " The token's PIN is already the new one: use it when you try again."
		}
		if s.recordLeftKey(err, in, caSerial) {
			msg += " The new key could not be removed while the token was out. Put the token back: its row on the Tokens page then offers “Remove the leftover key”, which removes that key only and asks for the token's PIN (a private key can be removed only after a login, and this UI keeps no PIN); enrolling the token again removes it too."
		} else if errors.Is(err, pkcs11.ErrKeyLeft) {
			msg += " The new key could not be removed while the token was out: enrolling the token again removes it."
		}
		if caSerial != "" {
			// Issued, but never written beside its key: no one can use it,
			// yet the CA lists it as valid.
			msg += " The CA had issued certificate " + caSerial + " for the new key, which did not reach the token: revoke it (reason superseded) on the Revoke page, or ask an administrator to."
		}
		var ce *caclient.Error
		if errors.As(err, &ce) {
			msg = "The CA refused: " + ce.Message + ". The token was left as it was (the new key was removed)." + pinNote(pinChanged)
		}
		j.fail(msg)
		a.Result, a.Reason = "failed", err.Error()
		s.audit(a)
	}
	tok, err := s.mod.OpenToken(in.token.Serial)
	if err != nil {
		fail(err, false)
		return
	}
	defer tok.Close()

	j.set("pin", stepRun)
	if in.soPIN != nil {
		err = tok.ResetPIN(in.soPIN, in.newPIN)
	} else {
		err = tok.ChangePIN(in.curPIN, in.newPIN)
	}
	if err != nil {
		fail(err, false)
		return
	}
	j.set("pin", stepOK)
	j.set("key", stepRun)

	sign := func(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error) {
		// Enroll calls this once the key exists and the CSR is signed with it.
		j.set("key", stepOK)
		j.set("csr", stepOK)
		j.set("ca", stepRun)
		resp, err := s.agent.Sign(ctx, caclient.SignRequest{
			CSR:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
			User: in.user, ValidityDays: s.cfg.ValidityDays,
		})
		if err != nil {
			return nil, err
		}
		caSerial = resp.Serial
		j.set("ca", stepOK)
		j.set("write", stepRun)
		return resp.Chain, nil
	}
	res, err := tok.Enroll(ctx, pkcs11.EnrollRequest{User: in.user, KeyType: in.kt, PIN: in.newPIN, SOPIN: in.mgmt,
		WriteCACerts: *s.cfg.WriteCACerts, Roots: s.roots, Replace: in.replace}, sign)
	if err != nil {
		fail(err, true)
		return
	}
	j.set("write", stepOK)
	if caSerial != "" {
		res.Serial = caSerial
	}
	r := &receipt{User: res.User, Serial: res.Serial, TokenLabel: res.TokenLabel, TokenSerial: res.TokenSerial,
		KeyType: string(res.KeyType), Label: res.Label, NotBefore: res.Certificate.NotBefore, NotAfter: res.NotAfter,
		Issued: time.Now(), Operator: in.operator, Warnings: res.Warnings, ClientModule: s.cfg.ClientModule, RootsURL: s.cfg.RootsURL}
	a.Serial, a.Result = res.Serial, "ok"
	s.audit(a)
	for _, old := range res.Replaced {
		serial := pkcs11.SerialHex(old.SerialNumber)
		r.Replaced = append(r.Replaced, serial+" ("+certUser(old)+")")
		if !in.revoke {
			r.NotRevoked = append(r.NotRevoked, serial)
			continue
		}
		if !strings.EqualFold(certUser(old), in.user) {
			// Only the new user's own old certificate is revoked by the
			// checkbox; another user's is not this enrollment's to revoke.
			r.NotRevoked = append(r.NotRevoked, serial)
			r.Warnings = append(r.Warnings, "The old certificate "+serial+" belonged to "+certUser(old)+", not "+in.user+
				", so it was not revoked. Check with an admin whether "+certUser(old)+" still needs it; if not, revoke it on the Revoke page.")
			s.audit(action{Operator: in.operator, Action: "revoke", User: certUser(old), Serial: serial, TokenSerial: in.token.Serial,
				Result: "skipped", Reason: "replaced by another user's enrollment"})
			continue
		}
		j.set("revoke", stepRun)
		rv, err := s.admin.Revoke(ctx, serial, "superseded", "replaced on token "+in.token.Serial+" by "+res.Serial)
		ra := action{Operator: in.operator, Action: "revoke", User: certUser(old), Serial: serial, TokenSerial: in.token.Serial, Result: "ok", Reason: "superseded"}
		if err != nil {
			r.NotRevoked = append(r.NotRevoked, serial)
			r.Warnings = append(r.Warnings, "The old certificate "+serial+" was not revoked: "+err.Error()+". Revoke it on the Revoke page.")
			ra.Result, ra.Reason = "failed", err.Error()
		} else {
			r.Revoked = append(r.Revoked, revokedLine(rv, s.cfg.FrontCRLInterval.D()))
		}
		s.audit(ra)
	}
	if in.revoke {
		if len(res.Replaced) == 0 {
			j.set("revoke", stepSkip)
		} else if len(r.NotRevoked) == 0 {
			j.set("revoke", stepOK)
		} else {
			j.set("revoke", stepFail)
		}
	}
	j.finish(r)
}

func pinNote(changed bool) string {
	if changed {
		return " The token's PIN is already the new one."
	}
	return ""
}

func certUser(c *x509.Certificate) string {
	if len(c.EmailAddresses) > 0 {
		return c.EmailAddresses[0]
	}
	return c.Subject.CommonName
}

func (s *Server) enrollJob(c *gin.Context) {
	j := s.jobs.get(c.Param("id"), sessionOf(c).id)
	if j == nil {
		s.renderStatus(c, http.StatusNotFound, "error", page{Title: "No such enrollment",
			Error: "This enrollment is unknown or was started in another browser session. See the token's state on the Tokens page."})
		return
	}
	v := j.view()
	p := page{Title: "Enrollment", Nav: "enroll", Data: v}
	if !v.Done {
		p.Refresh = 1
	} else if v.Receipt != nil {
		p.Title = "Receipt: " + v.Receipt.User
	}
	s.render(c, "job", p)
}

// enrollJobFragment is the progress list the script refreshes.
func (s *Server) enrollJobFragment(c *gin.Context) {
	j := s.jobs.get(c.Param("id"), sessionOf(c).id)
	if j == nil {
		c.AbortWithStatus(http.StatusNotFound)
		return
	}
	v := j.view()
	if v.Done {
		c.Header("X-Job-Done", "1")
	}
	s.fragment(c, "job", "job-steps", page{Data: v})
}
