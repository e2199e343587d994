package mtls

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// newProxyListener wraps ln so that connections from trusted networks must start with a
// PROXY protocol v2 header, whose source address then stands for the client everywhere
// (limits, logs, the ID sent to the backend). Connections from anywhere else are taken as
// direct clients and their bytes are never parsed as a PROXY header: an untrusted client
// cannot choose its own address. trusted is asked on every connection, so a reload
// that changes proxy_protocol.trusted_networks applies to the next one.
func newProxyListener(ln net.Listener, trusted func() []netip.Prefix, timeout time.Duration, log *slog.Logger) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: timeout,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			ap := addrPort(o.Upstream)
			for _, p := range trusted() {
				if p.Contains(ap.Addr().Unmap()) {
					return proxyproto.REQUIRE, nil
				}
			}
			return proxyproto.SKIP, nil
		},
		ValidateHeader: func(h *proxyproto.Header) error {
			if h.Version != 2 {
				log.Warn("PROXY header refused", "reason", "only PROXY protocol v2 is accepted")
				return errors.New("mtls: only PROXY protocol v2 is accepted")
			}
			return nil
		},
	}
}
