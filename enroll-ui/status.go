package enrollui

import (
	"context"
	"crypto/x509"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/pkcs11"
)

// check is one line of the status page.
type check struct {
	Name, Value string
	Level       string // ok, warn, bad
	Action      string // what to do when not ok
}

type statusData struct {
	Checks []check
	Module pkcs11.ModuleInfo
	Bad    bool
}

func (s *Server) statusData(ctx context.Context) statusData {
	d := statusData{Module: s.mod.Info()}
	now := time.Now()
	add := func(ch check) {
		if ch.Level == "bad" {
			d.Bad = true
		}
		d.Checks = append(d.Checks, ch)
	}
	der, err := s.agent.CRL(ctx)
	if err != nil {
		add(check{Name: "CA", Value: "unreachable: " + err.Error(), Level: "bad",
			Action: "Check the network and that the CA runs at " + s.cfg.CAURL + ". Enrollment and revocation wait for it."})
	} else {
		add(check{Name: "CA", Value: "reachable at " + s.cfg.CAURL, Level: "ok"})
		crl, err := x509.ParseRevocationList(der)
		switch {
		case err != nil:
			add(check{Name: "CRL", Value: "unreadable: " + err.Error(), Level: "bad", Action: "Tell the CA administrator."})
		default:
			lvl, act := "ok", ""
			if now.After(crl.NextUpdate) {
				lvl, act = "bad", "The CRL is past its next update: fronts will refuse every login soon. Tell the CA administrator."
			} else if crl.NextUpdate.Sub(now) < crl.NextUpdate.Sub(crl.ThisUpdate)/4 {
				lvl, act = "warn", "The CRL should have been renewed by now. Tell the CA administrator."
			}
			add(check{Name: "CRL", Value: "number " + crl.Number.String() + ", issued " + ago(now.Sub(crl.ThisUpdate)) + " ago, next update " + crl.NextUpdate.UTC().Format("2006-01-02 15:04 UTC"), Level: lvl, Action: act})
		}
	}
	add(credCheck("Enrollment-agent credential", s.agentCert, now, "Have an administrator issue a new one (imapgate agent issue) before it expires."))
	if s.admin != nil {
		add(credCheck("Admin credential", s.adminCert, now, "Have a new admin credential issued."))
	} else {
		add(check{Name: "Admin credential", Value: "none: revocation is off on this PC", Level: "ok"})
	}
	list, problem := s.tokens.current()
	if problem != "" {
		add(check{Name: "Card reader", Value: problem, Level: "bad", Action: "Plug the reader in; for smartcards and YubiKeys pcscd must run."})
	} else {
		add(check{Name: "Card reader", Value: itoaTokens(len(list)), Level: "ok"})
	}
	return d
}

func itoaTokens(n int) string {
	switch n {
	case 0:
		return "no token inserted"
	case 1:
		return "1 token inserted"
	}
	return strconv.Itoa(n) + " tokens inserted"
}

func credCheck(name string, ci credInfo, now time.Time, act string) check {
	left := ci.NotAfter.Sub(now)
	ch := check{Name: name, Value: ci.Subject + ", serial " + ci.Serial + ", valid until " + ci.NotAfter.UTC().Format("2006-01-02"), Level: "ok"}
	switch {
	case left <= 0:
		ch.Level, ch.Value, ch.Action = "bad", ch.Value+" (expired)", act
	case left < expiringWithin:
		ch.Level, ch.Value, ch.Action = "warn", ch.Value+" (expires in "+days(left)+")", act
	}
	return ch
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return days(d)
}

func (s *Server) statusPage(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 10*time.Second)
	defer cancel()
	s.render(c, "status", page{Title: "Status", Nav: "status", Data: s.statusData(ctx)})
}
