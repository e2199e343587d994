package ca

import (
	"net/http"
	"net/url"
	"strconv"
)

// AuditListJSON answers GET /api/v1/audit.
type AuditListJSON struct {
	Entries []AuditEntry `json:"entries"`
}

// userKinds is what an enrollment agent may see: user certificates only,
// never the admins', the agents' or the servers'.
var userKinds = []string{KindUser}

// queryLimit reads limit= (1 to max); absent is 0, the listing's default.
func queryLimit(q url.Values, max int) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("limit %.20q: give a number from 1 to %d", l, max)
	}
	return n, nil
}

func (s *Server) handleAuditList(w http.ResponseWriter, r *http.Request, by Requester) {
	q := r.URL.Query()
	aq := AuditQuery{Serial: q.Get("serial"), User: q.Get("user")}
	about(r).Serial, about(r).User = aq.Serial, aq.User
	var err error
	if aq.Limit, err = queryLimit(q, MaxAuditLimit); err != nil {
		s.fail(w, r, err, by)
		return
	}
	if by.Role != RoleAdmin {
		aq.Kinds = userKinds
	}
	list, err := s.ca.Audit(aq)
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	writeJSON(w, http.StatusOK, AuditListJSON{Entries: list})
}

func (s *Server) handleAuditReport(w http.ResponseWriter, r *http.Request, by Requester) {
	var req ReportRequest
	if err := decode(r.Body, &req); err != nil {
		s.fail(w, r, err, by)
		return
	}
	about(r).User, about(r).Serial = req.User, req.Serial
	e, err := s.ca.Report(r.Context(), req, by)
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	writeJSON(w, http.StatusCreated, e)
}
