package enrollui

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imapgate/imapgate/caclient"
)

// action is one help desk action for the audit log and the CA's trail.
type action struct {
	Operator    string
	Action      string // enroll, pin-change, pin-unblock, revoke, login, …
	User        string
	Serial      string
	TokenSerial string
	Result      string // ok or failed
	Reason      string // the error, or the revocation reason
}

// audit writes one line to the audit log and records it with the CA. The
// CA's record is best effort: its failure is logged, never shown as the
// action's failure (the action already happened or failed).
func (s *Server) audit(a action) {
	s.auditLog.Info("audit", "operator", a.Operator, "action", a.Action, "user", a.User, "serial", a.Serial,
		"token_serial", a.TokenSerial, "result", a.Result, "reason", a.Reason)
	if s.agent == nil || a.Action == "login" || a.Action == "login-failed" {
		return
	}
	// In the background: a CA that does not answer must not hold up the
	// page; Close waits for these.
	reason := "operator " + a.Operator
	if a.Reason != "" {
		reason += ": " + a.Reason
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.agent.RecordAudit(ctx, caclient.AuditEntry{Action: "helpdesk-" + a.Action, User: a.User, Serial: a.Serial,
			TokenSerial: a.TokenSerial, Result: a.Result, Reason: trimReason(reason)})
		if err != nil {
			s.log.Warn("enroll-ui: the CA did not record the audit entry", "action", a.Action, "error", err)
		}
	}()
}

// trimReason fits a reason into the CA's limit (256 bytes, no control
// characters), cutting at a rune boundary.
func trimReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return ' '
		}
		return r
	}, s)
	const limit = 256
	if len(s) <= limit {
		return s
	}
	cut := limit - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func result(err error) (string, string) {
	if err != nil {
		return "failed", err.Error()
	}
	return "ok", ""
}
