package caclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imapgate/imapgate/secretfile"
)

// Files of a credential directory, as `imapgate ca init` and `imapgate agent issue` write them.
const (
	CertFile  = "cert.pem"  // the role certificate, then its intermediate
	KeyFile   = "key.pem"   // its private key, 0600
	RootsFile = "roots.pem" // the CA root, to check the CA's own TLS certificate
)

// Environment variables the CLI falls back to.
const (
	EnvCA   = "IMAPGATE_CA"
	EnvCred = "IMAPGATE_CRED"
)

// Client calls one CA. It is safe for concurrent use.
type Client struct {
	base *url.URL
	http *http.Client
	// Roots is the CA root from the credential.
	Roots *x509.CertPool
}

// New reads the credential in credDir and returns a client for the CA at
// baseURL (https://host:port). An empty credDir gives a client for the
// public paths only.
func New(baseURL, credDir string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("caclient: CA URL %q must be https://host:port (set --ca or %s)", baseURL, EnvCA)
	}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var roots *x509.CertPool
	if credDir != "" {
		rb, err := os.ReadFile(filepath.Join(credDir, RootsFile))
		if err != nil {
			return nil, fmt.Errorf("caclient: credential %s: %w (is --cred a credential directory?)", credDir, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(rb) {
			return nil, fmt.Errorf("caclient: credential %s: %s holds no certificate", credDir, RootsFile)
		}
		if err := secretfile.Check(filepath.Join(credDir, KeyFile), "caclient: credential key"); err != nil {
			return nil, err
		}
		cert, err := tls.LoadX509KeyPair(filepath.Join(credDir, CertFile), filepath.Join(credDir, KeyFile))
		if err != nil {
			return nil, fmt.Errorf("caclient: credential %s: %w", credDir, err)
		}
		tcfg.RootCAs = roots
		tcfg.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{TLSClientConfig: tcfg, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second, MaxIdleConnsPerHost: 16}
	return &Client{base: u, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}, Roots: roots}, nil
}

// DialAddress makes the client connect to addr (host:port) whatever the
// URL's host resolves to, still checking the CA's TLS certificate against
// the URL's host: for a process next to the CA, which listens on 127.0.0.1
// while its URL names the public host. Call it before the first request.
func (c *Client) DialAddress(addr string) {
	tr, ok := c.http.Transport.(*http.Transport)
	if !ok || addr == "" {
		return
	}
	d := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
}

// Error is an error answer from the CA.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("CA answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// SignRequest asks for a user certificate.
type SignRequest struct {
	CSR          []byte // PEM CERTIFICATE REQUEST
	User         string // the mailbox login
	ValidityDays int    // 0: the CA's default
}

// SignResponse is an issued certificate.
type SignResponse struct {
	Chain     []*x509.Certificate // leaf first
	Serial    string              // hex
	User      string
	Role      string
	NotBefore time.Time
	NotAfter  time.Time
	// ChainPEM is the chain as the CA sent it.
	ChainPEM []byte
}

type certJSON struct {
	Serial    string    `json:"serial"`
	User      string    `json:"user"`
	Role      string    `json:"role"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Chain     string    `json:"chain"`
}

// Sign has the CA issue a user certificate for the CSR.
func (c *Client) Sign(ctx context.Context, req SignRequest) (*SignResponse, error) {
	var out certJSON
	body := map[string]any{"csr": string(req.CSR), "user": req.User}
	if req.ValidityDays > 0 {
		body["validity_days"] = req.ValidityDays
	}
	if err := c.do(ctx, http.MethodPost, PathSign, body, &out); err != nil {
		return nil, fmt.Errorf("caclient: sign for %s: %w", req.User, err)
	}
	return out.response()
}

func (j *certJSON) response() (*SignResponse, error) {
	chain, err := ParseCerts([]byte(j.Chain))
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("caclient: the CA sent no usable chain: %v", err)
	}
	return &SignResponse{Chain: chain, Serial: j.Serial, User: j.User, Role: j.Role,
		NotBefore: j.NotBefore, NotAfter: j.NotAfter, ChainPEM: []byte(j.Chain)}, nil
}

// IssueAgent has the CA issue a role certificate (role "enroll" or "admin")
// named name for the key that signed csrPEM.
func (c *Client) IssueAgent(ctx context.Context, role, name string, csrPEM []byte) (*SignResponse, error) {
	var out certJSON
	if err := c.do(ctx, http.MethodPost, PathAgents, map[string]any{"role": role, "name": name, "csr": string(csrPEM)}, &out); err != nil {
		return nil, fmt.Errorf("caclient: issue %s credential %q: %w", role, name, err)
	}
	return out.response()
}

// Revoked is the CA's answer to a revocation.
type Revoked struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
	// CRLNumber is the first CRL that lists the certificate; 0 while
	// CRLPending.
	CRLNumber int64 `json:"crl_number"`
	// CRLPending: the revocation is stored, but the CA could not re-sign the
	// CRL yet (HTTP 202); Note says when it will. Relying parties still
	// accept the certificate until then.
	CRLPending bool   `json:"crl_pending"`
	Note       string `json:"note"`
}

// Revoke revokes the certificate with the hex serial; reason is an RFC 5280
// name such as keyCompromise.
func (c *Client) Revoke(ctx context.Context, serial, reason, comment string) (*Revoked, error) {
	return c.RevokeWith(ctx, RevokeRequest{Serial: serial, Reason: reason, Comment: comment})
}

// RevokeRequest asks for a revocation (admin only): by Serial, or by
// CertificatePEM, which the CA records first if its database does not hold
// it (a certificate issued after the backup it was restored from) once it
// has checked that its intermediate signed it. ForceUnknownSerial revokes a
// Serial the database does not hold, for a certificate whose file is gone.
type RevokeRequest struct {
	Serial             string
	CertificatePEM     []byte
	ForceUnknownSerial bool
	Reason             string // RFC 5280 name, e.g. keyCompromise
	Comment            string
}

// RevokeWith revokes as req says.
func (c *Client) RevokeWith(ctx context.Context, req RevokeRequest) (*Revoked, error) {
	body := map[string]any{"reason": req.Reason, "comment": req.Comment}
	what := req.Serial
	if req.Serial != "" {
		body["serial"] = req.Serial
	}
	if len(req.CertificatePEM) > 0 {
		body["certificate"] = string(req.CertificatePEM)
		if what == "" {
			what = "by certificate"
		}
	}
	if req.ForceUnknownSerial {
		body["force_unknown_serial"] = true
	}
	var out Revoked
	if err := c.do(ctx, http.MethodPost, PathRevoke, body, &out); err != nil {
		return nil, fmt.Errorf("caclient: revoke %s: %w", what, err)
	}
	return &out, nil
}

// Cert is one issued certificate as the CA lists it.
type Cert struct {
	Serial string `json:"serial"`
	User   string `json:"user"`
	Role   string `json:"role"`
	// Kind is user, role, server or ca-tls.
	Kind string `json:"kind"`
	// DNS and IP are a server certificate's names.
	DNS        []string   `json:"dns"`
	IP         []string   `json:"ip"`
	Subject    string     `json:"subject"`
	KeyType    string     `json:"key_type"`
	NotBefore  time.Time  `json:"not_before"`
	NotAfter   time.Time  `json:"not_after"`
	IssuedAt   time.Time  `json:"issued_at"`
	Status     string     `json:"status"`
	RevokedAt  *time.Time `json:"revoked_at"`
	ReasonCode int        `json:"reason_code"`
	Reason     string     `json:"reason"`
	IssuedBy   struct {
		Subject string `json:"subject"`
		Serial  string `json:"serial"`
	} `json:"issued_by"`
	// RecordedBy is the admin who recorded a certificate the CA database did
	// not hold (revoked by its file after a restore); nil otherwise.
	RecordedBy *struct {
		Subject string `json:"subject"`
		Serial  string `json:"serial"`
	} `json:"recorded_by"`
}

// List returns the issued certificates, newest first, for one user or all.
func (c *Client) List(ctx context.Context, user string) ([]Cert, error) {
	return c.Search(ctx, CertQuery{User: user})
}

// CertQuery selects certificates; empty fields match all.
type CertQuery struct {
	User   string // mailbox login
	Serial string // hex serial
	// Kinds, when not empty, keeps only these kinds (user, role, server,
	// ca-tls, unknown); an enrollment agent gets user certificates only.
	Kinds []string
	// Limit is the most certificates a page holds (SearchPage); 0 leaves it
	// to the CA (100), at most 1000.
	Limit int
	// Before is the Next of the page before (SearchPage).
	Before string
}

// CertPage is one page of a search, newest first. Next, when not empty, is
// the Before of the page after it.
type CertPage struct {
	Certs []Cert `json:"certs"`
	Next  string `json:"next"`
}

// maxPageLimit is the CA's largest page.
const maxPageLimit = 1000

// Search returns every issued certificate that matches q, newest first, each
// with Status (valid, revoked, expired), RevokedAt, Reason and NotAfter,
// reading page after page; q.Limit and q.Before are its own. An enrollment
// agent gets user certificates only.
func (c *Client) Search(ctx context.Context, q CertQuery) ([]Cert, error) {
	q.Limit, q.Before = maxPageLimit, ""
	var out []Cert
	for {
		p, err := c.SearchPage(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Certs...)
		if p.Next == "" || p.Next == q.Before {
			// A CA from before paging sends no Next: its one answer is all.
			return out, nil
		}
		q.Before = p.Next
	}
}

// SearchPage returns one page of the certificates that match q (at most
// q.Limit, after q.Before).
func (c *Client) SearchPage(ctx context.Context, q CertQuery) (CertPage, error) {
	var out CertPage
	v := url.Values{}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.Serial != "" {
		v.Set("serial", q.Serial)
	}
	for _, k := range q.Kinds {
		v.Add("kind", k)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Before != "" {
		v.Set("before", q.Before)
	}
	p := PathCerts
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	if err := c.do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return CertPage{}, fmt.Errorf("caclient: list certificates: %w", err)
	}
	return out, nil
}

// CRL fetches the DER CRL (public path; needs no credential).
func (c *Client) CRL(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/crl", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("caclient: fetch CRL: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("caclient: fetch CRL: %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr x509.UnknownAuthorityError
		if errors.As(err, &uerr) {
			return fmt.Errorf("the server at %s is not this CA (its TLS certificate does not chain to roots.pem): %w", c.base.Host, err)
		}
		return fmt.Errorf("cannot reach the CA at %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read CA answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("the CA's answer is not the expected JSON: %w", err)
		}
	}
	return nil
}

// ParseCerts decodes every CERTIFICATE block of a PEM bundle.
func ParseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate found")
	}
	return out, nil
}
