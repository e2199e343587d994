package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imapgate/imapgate/caclient"
)

// MaxBodyBytes bounds every API request body. A CSR is a few hundred bytes.
const MaxBodyBytes = 64 << 10

// API paths (caclient defines them, so client and server cannot drift apart).
const (
	PathSign   = caclient.PathSign
	PathRevoke = caclient.PathRevoke
	PathCerts  = caclient.PathCerts
	PathAgents = caclient.PathAgents
	PathServer = caclient.PathServer
	PathAudit  = caclient.PathAudit
)

// SignRequestJSON is the body of POST /api/v1/sign.
type SignRequestJSON struct {
	CSR          string `json:"csr"` // PEM
	User         string `json:"user"`
	ValidityDays int    `json:"validity_days,omitempty"`
}

// CertResponseJSON answers sign and agents: the new certificate and its chain.
type CertResponseJSON struct {
	Serial      string    `json:"serial"`
	User        string    `json:"user,omitempty"`
	Role        Role      `json:"role,omitempty"`
	Subject     string    `json:"subject"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Certificate string    `json:"certificate"` // PEM, the leaf
	Chain       string    `json:"chain"`       // PEM, leaf then intermediate
}

// RevokeRequestJSON is the body of POST /api/v1/revoke.
type RevokeRequestJSON struct {
	Serial string `json:"serial,omitempty"` // hex
	// Certificate (PEM) revokes this certificate, recording it first if the
	// database does not hold it (after a restore); Serial may then be empty.
	Certificate string `json:"certificate,omitempty"`
	// ForceUnknownSerial revokes Serial even if the database does not hold it.
	ForceUnknownSerial bool   `json:"force_unknown_serial,omitempty"`
	Reason             string `json:"reason"` // RFC 5280 name, e.g. keyCompromise
	Comment            string `json:"comment,omitempty"`
}

// RevokeResponseJSON answers a revocation: 200 when the CRL lists it, 202 with
// CRLPending when it is stored but the CRL is not re-signed yet.
type RevokeResponseJSON struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
	// CRLNumber is the first CRL that lists it; absent while CRLPending.
	CRLNumber  int64  `json:"crl_number,omitempty"`
	CRLPending bool   `json:"crl_pending,omitempty"`
	Note       string `json:"note,omitempty"`
}

// AgentRequestJSON is the body of POST /api/v1/agents.
type AgentRequestJSON struct {
	Role string `json:"role"`
	Name string `json:"name"`
	CSR  string `json:"csr"` // PEM; the key stays with the agent
}

// CertListJSON answers GET /api/v1/certs: one page, newest first. Next,
// when present, is the page after it: pass it back as before=.
type CertListJSON struct {
	Certs []CertStatus `json:"certs"`
	Next  string       `json:"next,omitempty"`
}

// ErrorJSON is every error body: a sentence a person can act on.
type ErrorJSON struct {
	Error string `json:"error"`
}

// Server is the CA's HTTPS API and its public endpoints.
type Server struct {
	ca  *CA
	log *slog.Logger
	// tlsCert is the API's own certificate, swapped when it is renewed
	// (tlscert.go); renewing and retryAt (unix ns) keep that to one attempt at
	// a time and one a minute after a failure.
	tlsCert  atomic.Pointer[tls.Certificate]
	renewing atomic.Bool
	retryAt  atomic.Int64
	// lns are the listeners being served (serve.go); reload moves them.
	lns listeners
	// level, if set, is the log level a reload sets from log.level.
	level *slog.LevelVar
}

// NewServer wraps an open CA.
func NewServer(c *CA) *Server { return &Server{ca: c, log: c.log} }

// Handler serves the whole HTTPS surface: public paths and the role-authorized API.
func (s *Server) Handler() http.Handler {
	mux := s.publicMux()
	mux.HandleFunc("POST "+PathSign, s.authorize(s.handleSign, RoleEnroll, RoleAdmin))
	mux.HandleFunc("POST "+PathRevoke, s.authorize(s.handleRevoke, RoleAdmin))
	mux.HandleFunc("GET "+PathCerts, s.authorize(s.handleCerts, RoleAdmin, RoleEnroll))
	mux.HandleFunc("POST "+PathAgents, s.authorize(s.handleAgents, RoleAdmin))
	mux.HandleFunc("POST "+PathServer, s.authorize(s.handleServer, RoleAdmin))
	mux.HandleFunc("GET "+PathAudit, s.authorize(s.handleAuditList, RoleAdmin, RoleEnroll))
	mux.HandleFunc("POST "+PathAudit, s.authorize(s.handleAuditReport, RoleAdmin, RoleEnroll))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// PublicHandler serves only what relying parties fetch: CRL, roots, intermediate, health.
func (s *Server) PublicHandler() http.Handler { return s.publicMux() }

func (s *Server) publicMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl", s.handleCRL(false))
	mux.HandleFunc("GET /crl.pem", s.handleCRL(true))
	mux.HandleFunc("GET /roots.pem", s.servePEM(s.ca.root))
	mux.HandleFunc("GET /intermediate.pem", s.servePEM(s.ca.inter))
	mux.HandleFunc("GET /intermediate.crt", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/pkix-cert")
		w.Write(s.ca.inter.Raw)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := s.ca.CRL(); err != nil {
			writeError(w, http.StatusServiceUnavailable, "CRL unavailable: "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

func (s *Server) servePEM(cert *x509.Certificate) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(encodeCerts(cert))
	}
}

func (s *Server) handleCRL(asPEM bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		crl, err := s.ca.CRL()
		if err != nil {
			s.log.Error("ca: serve CRL", "error", err)
			writeError(w, http.StatusServiceUnavailable, "the CRL is not available right now; try again shortly")
			return
		}
		etag := crl.ETag
		if asPEM {
			etag = strings.TrimSuffix(etag, `"`) + `-pem"`
		}
		h := w.Header()
		h.Set("ETag", etag)
		h.Set("Last-Modified", crl.ThisUpdate.UTC().Format(http.TimeFormat))
		h.Set("Expires", crl.NextUpdate.UTC().Format(http.TimeFormat))
		// Relying parties poll with If-None-Match; let caches revalidate every time.
		h.Set("Cache-Control", "no-cache")
		h.Set("X-CRL-Number", strconv.FormatInt(crl.Number, 10))
		if etagMatch(r.Header.Get("If-None-Match"), etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if asPEM {
			h.Set("Content-Type", "application/x-pem-file")
			w.Write(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.DER}))
			return
		}
		h.Set("Content-Type", "application/pkix-crl")
		h.Set("Content-Length", strconv.Itoa(len(crl.DER)))
		if r.Method != http.MethodHead {
			w.Write(crl.DER)
		}
	}
}

func etagMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// authorize lets a request through only with a verified, unrevoked role
// certificate of one of the given roles: no certificate → 401, a user
// certificate or another role → 403.
func (s *Server) authorize(h func(http.ResponseWriter, *http.Request, Requester), roles ...Role) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			writeError(w, http.StatusUnauthorized, "a client certificate of this CA is required: pass an admin or enrollment-agent credential (--cred DIR)")
			return
		}
		cert := r.TLS.VerifiedChains[0][0]
		by := RequesterFromCert(cert, remoteIP(r))
		rev, err := s.ca.IsRevoked(cert)
		if err != nil {
			s.log.Error("ca: revocation check of a client", "serial", by.Serial, "error", err)
			writeError(w, http.StatusServiceUnavailable, "cannot check the client certificate's revocation status; try again")
			return
		}
		what := requestAction(r)
		if rev {
			s.log.Warn("ca: refused a revoked credential", "path", r.URL.Path, by.logAttrs())
			s.ca.auditRefusal(r.Context(), what, by, "the requester's credential is revoked")
			writeError(w, http.StatusForbidden, "this credential has been revoked; ask an admin for a new one")
			return
		}
		role := RoleOf(cert)
		for _, allowed := range roles {
			if role == allowed {
				r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
				h(w, r.WithContext(context.WithValue(r.Context(), aboutKey{}, &what)), by)
				return
			}
		}
		s.log.Warn("ca: refused: wrong role", "path", r.URL.Path, "need", fmt.Sprint(roles), by.logAttrs())
		if role == "" {
			// A user certificate: no role, nothing the trail could name
			// but its subject; it is logged.
			writeError(w, http.StatusForbidden, "a user certificate cannot use the CA API; use an admin or enrollment-agent credential")
			return
		}
		s.ca.auditRefusal(r.Context(), what, by, fmt.Sprintf("the %s role may not do this; it needs %s", role, joinRoles(roles)))
		writeError(w, http.StatusForbidden, fmt.Sprintf("the %s role may not do this; it needs %s", role, joinRoles(roles)))
	}
}

// aboutKey holds, in an authorized request's context, what the request
// asks for (*AuditEntry), for the audit entry of a refusal; handlers fill
// in the user or serial once they have read them.
type aboutKey struct{}

// about is the request's audit description (a throwaway one outside authorize).
func about(r *http.Request) *AuditEntry {
	if a, ok := r.Context().Value(aboutKey{}).(*AuditEntry); ok {
		return a
	}
	return &AuditEntry{}
}

// requestAction names what a request asks for, as the audit trail does.
func requestAction(r *http.Request) AuditEntry {
	switch r.Method + " " + r.URL.Path {
	case "POST " + PathSign:
		return AuditEntry{Action: "issue", Kind: KindUser}
	case "POST " + PathAgents:
		return AuditEntry{Action: "issue-role", Kind: KindRole}
	case "POST " + PathServer:
		return AuditEntry{Action: "issue-server", Kind: KindServer}
	case "POST " + PathRevoke:
		return AuditEntry{Action: "revoke"}
	case "GET " + PathCerts:
		return AuditEntry{Action: "list-certs"}
	case "GET " + PathAudit:
		return AuditEntry{Action: "list-audit"}
	case "POST " + PathAudit:
		return AuditEntry{Action: "report", Kind: KindUser}
	}
	return AuditEntry{Action: r.Method + " " + r.URL.Path}
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// decode reads a JSON body strictly: one object, known fields, bounded size
// (the handler wraps the body in http.MaxBytesReader).
func decode(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return badRequest("the request body is larger than %d bytes", MaxBodyBytes)
		case errors.Is(err, io.EOF):
			return badRequest("the request body is empty; send a JSON object")
		default:
			return badRequest("the request body is not valid JSON for this endpoint: %v", err)
		}
	}
	if dec.More() {
		return badRequest("the request body has data after the JSON object")
	}
	return nil
}

// parseSignRequest is the API's CSR intake: the JSON body, the PEM CSR in it
// and the requested validity. Identity and CSR policy are checked by CA.Sign.
func parseSignRequest(body io.Reader) (SignRequest, error) {
	var req SignRequestJSON
	if err := decode(body, &req); err != nil {
		return SignRequest{}, err
	}
	csr, err := ParseCSR([]byte(req.CSR))
	if err != nil {
		return SignRequest{Identity: req.User}, err
	}
	if req.ValidityDays < 0 || req.ValidityDays > 100*365 {
		return SignRequest{Identity: req.User}, badRequest("validity_days %d is out of range", req.ValidityDays)
	}
	return SignRequest{CSR: csr, Identity: req.User, Validity: time.Duration(req.ValidityDays) * 24 * time.Hour}, nil
}

func (s *Server) handleSign(w http.ResponseWriter, r *http.Request, by Requester) {
	req, err := parseSignRequest(r.Body)
	about(r).User = req.Identity
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	iss, err := s.ca.Sign(r.Context(), req, by)
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	writeJSON(w, http.StatusCreated, certResponse(iss))
}

func certResponse(iss *Issued) CertResponseJSON {
	return CertResponseJSON{
		Serial: iss.Record.Serial, User: iss.Record.Identity, Role: iss.Record.Role, Subject: iss.Record.Subject,
		NotBefore: iss.Cert.NotBefore, NotAfter: iss.Cert.NotAfter,
		Certificate: string(encodeCerts(iss.Cert)), Chain: string(encodeCerts(iss.Chain...)),
	}
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, by Requester) {
	req, err := parseRevokeRequest(r.Body)
	about(r).Serial = req.serialHex()
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	var rv *Revoked
	switch {
	case req.cert != nil:
		rv, err = s.ca.RevokeCertificate(r.Context(), req.cert, req.code, req.comment, by)
	case req.force:
		rv, err = s.ca.RevokeUnknownSerial(r.Context(), req.serial, req.code, req.comment, by)
	default:
		rv, err = s.ca.Revoke(r.Context(), req.serial, req.code, req.comment, by)
	}
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	s.tlsRevoked(rv.Serial)
	resp := RevokeResponseJSON{Serial: rv.Serial, RevokedAt: rv.RevokedAt, CRLNumber: rv.CRLNumber}
	if rv.CRLPending {
		// Stored, so not an error: a retry would only get 409. But the relying
		// parties do not know yet, and the admin must not think they do.
		resp.CRLPending = true
		resp.Note = fmt.Sprintf("revoked and stored, but not on the CRL yet: it could not be re-signed now (the CA log says why); "+
			"every CA node tries again every %s, and relying parties refuse the certificate from their first CRL fetch after that", rv.PublishWithin)
		writeJSON(w, http.StatusAccepted, resp)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleCerts(w http.ResponseWriter, r *http.Request, by Requester) {
	v := r.URL.Query()
	q := CertQuery{User: v.Get("user"), Serial: v.Get("serial"), Before: v.Get("before")}
	about(r).User, about(r).Serial = q.User, q.Serial
	var err error
	if q.Limit, err = queryLimit(v, MaxCertLimit); err != nil {
		s.fail(w, r, err, by)
		return
	}
	for _, k := range v["kind"] {
		if !slices.Contains(certKinds, k) {
			s.fail(w, r, badRequest("kind %.20q: give one of %s", k, strings.Join(certKinds, ", ")), by)
			return
		}
		q.Kinds = append(q.Kinds, k)
	}
	if by.Role != RoleAdmin {
		// An enrollment agent sees user certificates only, whatever it asks.
		q.Kinds = userKinds
	}
	page, err := s.ca.SearchPage(q)
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	writeJSON(w, http.StatusOK, CertListJSON(page))
}

// certKinds are the kinds a search may ask for (kind=).
var certKinds = []string{KindUser, KindRole, KindServer, KindCATLS, KindUnknown}

func (s *Server) handleAgents(w http.ResponseWriter, r *http.Request, by Requester) {
	var req AgentRequestJSON
	if err := decode(r.Body, &req); err != nil {
		s.fail(w, r, err, by)
		return
	}
	about(r).User = req.Name
	role, err := ParseRole(req.Role)
	if err != nil {
		s.fail(w, r, badRequest("%v", err), by)
		return
	}
	csr, err := ParseCSR([]byte(req.CSR))
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	iss, err := s.ca.IssueRole(r.Context(), csr, role, req.Name, by)
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	writeJSON(w, http.StatusCreated, certResponse(iss))
}

// fail maps an error to its status and logs it; internal details stay in the log.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error, by Requester) {
	status, msg := http.StatusInternalServerError, "internal error; the CA log has the details"
	switch {
	case errors.Is(err, ErrBadRequest):
		var re *requestError
		status, msg = http.StatusBadRequest, err.Error()
		if errors.As(err, &re) {
			msg = re.msg
		}
	case errors.Is(err, ErrNotFound):
		status, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, ErrAlreadyRevoked):
		status, msg = http.StatusConflict, err.Error()
	case errors.Is(err, ErrAudit):
		status, msg = http.StatusServiceUnavailable, "the CA cannot write its audit trail right now, so nothing was done; try again shortly (the CA log says why)"
	}
	lvl := slog.LevelWarn
	if status >= 500 {
		lvl = slog.LevelError
	} else if !errors.Is(err, ErrAudit) {
		s.ca.auditRefusal(r.Context(), *about(r), by, msg)
	}
	s.log.LogAttrs(r.Context(), lvl, "ca: request refused", slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.String("error", err.Error()), by.logAttrs())
	writeError(w, status, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorJSON{Error: msg})
}
