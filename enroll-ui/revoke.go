package enrollui

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/caclient"
)

// Reasons offers the RFC 5280 reasons a help desk uses.
var reasons = []struct{ Code, Text string }{
	{"keyCompromise", "lost or stolen token, or the key may be known to someone else"},
	{"superseded", "replaced by a new certificate"},
	{"affiliationChanged", "the user changed role or department"},
	{"cessationOfOperation", "the user left; the mailbox is closed"},
	{"unspecified", "another reason (say which in the comment)"},
}

// caCommentMax is the CA's limit on a revocation comment (bytes).
const caCommentMax = 256

// commentPrefix names the operator in the CA's revocation comment; a very
// long operator name is cut so a comment always fits.
func commentPrefix(op string) string {
	if len(op) > 64 {
		op = strings.ToValidUTF8(op[:64], "")
	}
	return "help desk " + op + ": "
}

// commentMax is the longest comment the operator can add.
func commentMax(op string) int { return caCommentMax - len(commentPrefix(op)) }

func validReason(r string) bool {
	for _, x := range reasons {
		if x.Code == r {
			return true
		}
	}
	return false
}

type revokeData struct {
	Query   string
	Cert    *certView
	Certs   []certView
	Reasons any
	Reason  string
	Comment string
	// CommentMax is the longest comment that fits the CA's limit after
	// the "help desk OPERATOR: " prefix.
	CommentMax int
	Done       string // the result sentence
	Result     *caclient.Revoked
}

func (s *Server) revokePage(c *gin.Context) {
	d := revokeData{Query: c.Query("serial"), Reasons: reasons, Reason: "keyCompromise", CommentMax: commentMax(sessionOf(c).operator)}
	if d.Query == "" {
		s.render(c, "revoke", page{Title: "Revoke", Nav: "revoke", Data: d})
		return
	}
	cert, status, msg := s.findForRevoke(c, d.Query)
	if cert == nil {
		s.renderStatus(c, status, "revoke", page{Title: "Revoke", Nav: "revoke", Error: msg, Data: d})
		return
	}
	d.Cert = cert
	s.render(c, "revoke", page{Title: "Revoke " + cert.Serial, Nav: "revoke", Data: d})
}

func (s *Server) findForRevoke(c *gin.Context, q string) (*certView, int, string) {
	serial := normSerial(q)
	if serial == "" {
		return nil, http.StatusBadRequest, "Type the certificate's serial (hex digits; the Certificates page finds it by mailbox)."
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 20*time.Second)
	defer cancel()
	certs, _, err := s.search(ctx, serial, "")
	if err != nil {
		return nil, http.StatusBadGateway, "The CA did not answer: " + err.Error() + ". Nothing was revoked."
	}
	if len(certs) == 0 {
		return nil, http.StatusNotFound, "The CA knows no user certificate with serial " + serial + "."
	}
	if certs[0].State == "revoked" {
		return nil, http.StatusConflict, fmt.Sprintf("Certificate %s of %s is already revoked (%s).", certs[0].Serial, certs[0].User, certs[0].StateText)
	}
	return &certs[0], 0, ""
}

// revokeForm reads the revocation form.
func revokeForm(c *gin.Context) revokeData {
	return revokeData{Query: c.PostForm("serial"), Reasons: reasons, Reason: c.PostForm("reason"),
		Comment: strings.TrimSpace(c.PostForm("comment")), CommentMax: commentMax(sessionOf(c).operator)}
}

// revokeConfirm checks the form and shows the confirmation naming user and serial.
func (s *Server) revokeConfirm(c *gin.Context) {
	d := revokeForm(c)
	cert, status, msg := s.findForRevoke(c, d.Query)
	if cert == nil {
		s.renderStatus(c, status, "revoke", page{Title: "Revoke", Nav: "revoke", Error: msg, Data: d})
		return
	}
	d.Cert = cert
	if !validReason(d.Reason) {
		s.renderStatus(c, http.StatusBadRequest, "revoke", page{Title: "Revoke", Nav: "revoke", Error: "Pick a reason from the list.", Data: d})
		return
	}
	if len(d.Comment) > d.CommentMax {
		s.renderStatus(c, http.StatusBadRequest, "revoke", page{Title: "Revoke", Nav: "revoke",
			Error: fmt.Sprintf("The comment is too long (%d characters): at most %d fit in the CA's audit trail. Shorten it.", len(d.Comment), d.CommentMax), Data: d})
		return
	}
	s.render(c, "revoke_confirm", page{Title: "Confirm revocation", Nav: "revoke", Data: d})
}

// revokeDo revokes after the confirmation.
func (s *Server) revokeDo(c *gin.Context) {
	d := revokeForm(c)
	if c.PostForm("confirm") != "yes" || !validReason(d.Reason) || len(d.Comment) > d.CommentMax {
		s.renderStatus(c, http.StatusBadRequest, "revoke", page{Title: "Revoke", Nav: "revoke",
			Error: "The revocation was not confirmed. Nothing was revoked.", Data: d})
		return
	}
	cert, status, msg := s.findForRevoke(c, d.Query)
	if cert == nil {
		s.renderStatus(c, status, "revoke", page{Title: "Revoke", Nav: "revoke", Error: msg, Data: d})
		return
	}
	d.Cert = cert
	ctx, cancel := context.WithTimeout(c.Request.Context(), 60*time.Second)
	defer cancel()
	op := sessionOf(c).operator
	rv, err := s.admin.Revoke(ctx, cert.Serial, d.Reason, commentPrefix(op)+d.Comment)
	res, why := result(err)
	if err == nil {
		why = d.Reason
	}
	s.audit(action{Operator: op, Action: "revoke", User: cert.User, Serial: cert.Serial, Result: res, Reason: why})
	if err != nil {
		s.renderStatus(c, http.StatusBadGateway, "revoke", page{Title: "Revoke", Nav: "revoke",
			Error: "The CA did not revoke it: " + err.Error() + ". Try again, or use imapgate cert revoke.", Data: d})
		return
	}
	d.Result, d.Done = rv, revokedLine(rv, s.cfg.FrontCRLInterval.D())
	s.render(c, "revoke_done", page{Title: "Revoked " + cert.Serial, Nav: "revoke", Notice: d.Done, Data: d})
}

// revokedLine says what the revocation means for the fronts.
func revokedLine(rv *caclient.Revoked, poll time.Duration) string {
	if rv.CRLPending {
		return fmt.Sprintf("Certificate %s is revoked and stored, but not on the CRL yet: %s Fronts refuse it within %s of the CRL that lists it.", rv.Serial, rv.Note, poll)
	}
	return fmt.Sprintf("Certificate %s is revoked: CRL number %d lists it; the fronts poll every %s, so they refuse it (and end its open sessions) within %s.",
		rv.Serial, rv.CRLNumber, poll, poll)
}
