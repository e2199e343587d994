package enrollui

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/caclient"
)

// expiringWithin marks a certificate "expiring".
const expiringWithin = 30 * 24 * time.Hour

// certView is a certificate as the pages show it.
type certView struct {
	caclient.Cert
	State     string // valid, expiring, expired, revoked
	StateText string
}

func viewCert(c caclient.Cert) certView {
	v := certView{Cert: c}
	now := time.Now()
	switch {
	case c.Status == "revoked" || c.RevokedAt != nil:
		v.State, v.StateText = "revoked", "revoked"
		if c.Reason != "" {
			v.StateText += " (" + c.Reason + ")"
		}
	case now.After(c.NotAfter):
		v.State, v.StateText = "expired", "expired"
	case c.NotAfter.Sub(now) < expiringWithin:
		v.State, v.StateText = "expiring", "expires in "+days(c.NotAfter.Sub(now))
	default:
		v.State, v.StateText = "valid", "valid"
	}
	return v
}

func days(d time.Duration) string {
	n := int(d.Hours() / 24)
	if n == 1 {
		return "1 day"
	}
	return strconv.Itoa(n) + " days"
}

// normSerial turns a pasted serial (with colons, spaces, lower case) into
// the CA's spelling, or "" if it is not hex.
func normSerial(s string) string {
	s = strings.ToUpper(strings.NewReplacer(":", "", " ", "", "-", "").Replace(strings.TrimSpace(s)))
	if s == "" {
		return ""
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'F') {
			return ""
		}
	}
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

func sameSerial(a, b string) bool {
	return strings.TrimLeft(strings.ToUpper(a), "0") == strings.TrimLeft(strings.ToUpper(b), "0")
}

// client is the admin client when there is one (it sees every certificate
// and the whole audit trail), else the agent's.
func (s *Server) client() *caclient.Client {
	if s.admin != nil {
		return s.admin
	}
	return s.agent
}

// The certificates page shows the newest userPage certificates of a
// mailbox, or newestPage of all when nothing is searched for, and links
// to the page of older ones.
const (
	userPage   = 100
	newestPage = 50
)

// search finds certificates by mailbox or serial: one page, after before
// (a cursor the CA gave with the page before; empty: the newest). next is
// the cursor of the page after it, empty on the last.
func (s *Server) search(ctx context.Context, q, before string) (list []certView, next string, err error) {
	q = strings.TrimSpace(q)
	cq := caclient.CertQuery{Kinds: []string{"user"}, Limit: newestPage, Before: before}
	if strings.Contains(q, "@") {
		cq.User, cq.Limit = q, userPage
	} else if q != "" {
		if cq.Serial = normSerial(q); cq.Serial == "" {
			return nil, "", errBadQuery
		}
	}
	if before != "" && !cursorLike(before) {
		return nil, "", errBadCursor
	}
	page, err := s.client().SearchPage(ctx, cq)
	var ce *caclient.Error
	if before != "" && errors.As(err, &ce) && ce.Status == http.StatusBadRequest {
		return nil, "", errBadCursor
	}
	if err != nil {
		return nil, "", err
	}
	var out []certView
	for _, c := range page.Certs {
		if !userCert(c) {
			continue // role, server and CA certificates are not the help desk's business
		}
		if cq.Serial != "" && !sameSerial(c.Serial, cq.Serial) {
			continue
		}
		out = append(out, viewCert(c))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].IssuedAt.After(out[j].IssuedAt) })
	return out, page.Next, nil
}

// cursorLike: what a CA's cursor is made of (base64url, short), so that
// nothing else is passed on to it.
func cursorLike(s string) bool {
	if len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// userCert says whether c is a user's certificate, the only kind the help
// desk sees and revokes. It fails closed: a kind the UI does not know (or a
// record with a role or server names) is not a user's.
func userCert(c caclient.Cert) bool {
	return c.Kind == "user" && c.Role == "" && len(c.DNS) == 0 && len(c.IP) == 0
}

type searchError string

func (e searchError) Error() string { return string(e) }

const (
	errBadQuery  = searchError("Search for a mailbox (alice@example.org) or a certificate serial (hex digits, colons allowed).")
	errBadCursor = searchError("This link to older certificates is damaged or from another CA: search again.")
)

type certsData struct {
	Query string
	Certs []certView
	// Older is the link to the page of older certificates, if there is one.
	Older string
}

func (s *Server) certsPage(c *gin.Context) {
	q := c.Query("q")
	ctx, cancel := context.WithTimeout(c.Request.Context(), 20*time.Second)
	defer cancel()
	certs, next, err := s.search(ctx, q, c.Query("before"))
	d := certsData{Query: q, Certs: certs}
	if next != "" {
		d.Older = "/certs?" + url.Values{"q": {q}, "before": {next}}.Encode()
	}
	p := page{Title: "Certificates", Nav: "certs", Data: d}
	switch {
	case err == errBadQuery, err == errBadCursor:
		p.Error = err.Error()
		s.renderStatus(c, http.StatusBadRequest, "certs", p)
		return
	case err != nil:
		p.Error = "The CA did not answer: " + err.Error() + ". See the Status page."
		s.renderStatus(c, http.StatusBadGateway, "certs", p)
		return
	}
	if q != "" && len(certs) == 0 {
		p.Notice = "No user certificate matches “" + q + "”."
	}
	s.render(c, "certs", p)
}

type certData struct {
	Cert     certView
	Trail    []caclient.AuditEntry
	TrailErr string
	OnToken  string // the token in the reader that holds it, if any
}

func (s *Server) certPage(c *gin.Context) {
	serial := normSerial(c.Param("serial"))
	if serial == "" {
		s.renderStatus(c, http.StatusBadRequest, "error", page{Title: "Certificate", Nav: "certs", Error: errBadQuery.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 20*time.Second)
	defer cancel()
	certs, _, err := s.search(ctx, serial, "")
	if err != nil {
		s.renderStatus(c, http.StatusBadGateway, "error", page{Title: "Certificate", Nav: "certs", Error: "The CA did not answer: " + err.Error() + "."})
		return
	}
	if len(certs) == 0 {
		s.renderStatus(c, http.StatusNotFound, "error", page{Title: "Certificate", Nav: "certs", Error: "The CA knows no user certificate with serial " + serial + "."})
		return
	}
	d := certData{Cert: certs[0]}
	d.Trail, err = s.client().Audit(ctx, caclient.AuditQuery{Serial: certs[0].Serial, Limit: 100})
	if err != nil {
		// A CA without the audit API still says who issued and revoked.
		d.TrailErr = "The CA's audit trail is not available (" + err.Error() + "); shown is what the certificate record says."
		d.Trail = []caclient.AuditEntry{{Time: certs[0].IssuedAt, Actor: certs[0].IssuedBy.Subject, Action: "issue", Serial: certs[0].Serial, User: certs[0].User, Result: "ok"}}
		if r := certs[0].RevokedAt; r != nil {
			d.Trail = append(d.Trail, caclient.AuditEntry{Time: *r, Action: "revoke", Serial: certs[0].Serial, User: certs[0].User, Reason: certs[0].Reason, Result: "ok"})
		}
	}
	list, _ := s.tokens.current()
	for _, t := range list {
		for _, cr := range t.Creds {
			if sameSerial(cr.Serial, certs[0].Serial) {
				d.OnToken = t.Label + " (serial " + t.Serial + ")"
			}
		}
	}
	s.render(c, "cert", page{Title: "Certificate " + certs[0].Serial, Nav: "certs", Data: d})
}
