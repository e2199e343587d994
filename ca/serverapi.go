package ca

import (
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ServerRequestJSON is the body of POST /api/v1/server.
type ServerRequestJSON struct {
	CSR string   `json:"csr"` // PEM
	DNS []string `json:"dns"`
	IP  []string `json:"ip"`
	// Validity is a Go duration such as "2160h"; empty means certificates.server_validity.
	Validity string `json:"validity,omitempty"`
}

// parseServerRequest is the intake of POST /api/v1/server: the JSON body,
// the PEM CSR, the IP addresses and the validity. The names are checked
// against the CSR by CA.IssueServer.
func parseServerRequest(body io.Reader) (ServerRequest, error) {
	var req ServerRequestJSON
	if err := decode(body, &req); err != nil {
		return ServerRequest{}, err
	}
	csr, err := ParseCSR([]byte(req.CSR))
	out := ServerRequest{DNS: req.DNS}
	if err != nil {
		return out, err
	}
	out.CSR = csr
	for _, s := range req.IP {
		ip := net.ParseIP(s)
		if ip == nil {
			return ServerRequest{}, badRequest("ip %q is not an IP address", s)
		}
		out.IP = append(out.IP, ip)
	}
	if req.Validity != "" {
		if out.Validity, err = time.ParseDuration(req.Validity); err != nil || out.Validity <= 0 {
			return ServerRequest{}, badRequest("validity %q is not a positive duration such as 2160h", req.Validity)
		}
	}
	return out, nil
}

func (s *Server) handleServer(w http.ResponseWriter, r *http.Request, by Requester) {
	req, err := parseServerRequest(r.Body)
	about(r).User = strings.Join(serverNames(req.DNS, req.IP), ", ")
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	iss, err := s.ca.IssueServer(r.Context(), req, by)
	if err != nil {
		s.fail(w, r, err, by)
		return
	}
	writeJSON(w, http.StatusCreated, certResponse(iss))
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
