package caclient

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// ServerRequest asks for a TLS server certificate (a front's, say). The CSR
// must name exactly DNS and IP in its subjectAltName, nothing else.
type ServerRequest struct {
	CSR []byte // PEM CERTIFICATE REQUEST
	DNS []string
	IP  []net.IP
	// Validity is the lifetime; 0 means the CA's certificates.server_validity (90 days).
	Validity time.Duration
}

// SignServer has the CA issue a server certificate; it needs an admin credential.
func (c *Client) SignServer(ctx context.Context, req ServerRequest) (*SignResponse, error) {
	ips := make([]string, len(req.IP))
	for i, ip := range req.IP {
		ips[i] = ip.String()
	}
	body := map[string]any{"csr": string(req.CSR), "dns": req.DNS, "ip": ips}
	if req.Validity > 0 {
		body["validity"] = req.Validity.String()
	}
	var out certJSON
	if err := c.do(ctx, http.MethodPost, PathServer, body, &out); err != nil {
		return nil, fmt.Errorf("caclient: server certificate for %s: %w", strings.Join(append(append([]string{}, req.DNS...), ips...), ", "), err)
	}
	return out.response()
}
