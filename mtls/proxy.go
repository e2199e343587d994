package mtls

import (
	"errors"
	"fmt"
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
// cannot choose its own address (and from a trusted network a connection without a
// valid header is refused). trusted is asked on every connection, so a reload
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
			if err := validateProxyHeader(h); err != nil {
				log.Warn("PROXY header refused", "reason", err.Error())
				return err
			}
			return nil
		},
	}
}

// validateProxyHeader accepts a PROXY protocol v2 header that names a TCP client over
// IPv4 or IPv6, or a LOCAL one (the balancer's own connection, a health check: it then
// stands for itself, as the protocol says). Anything else — v1, UDP, AF_UNIX or an
// unspecified family with PROXY — is refused, and the connection with it: such an
// address could not key the per-address limits, nor be passed on to the backend.
func validateProxyHeader(h *proxyproto.Header) error {
	switch {
	case h.Version != 2:
		return errors.New("mtls: only PROXY protocol v2 is accepted")
	case h.Command.IsLocal():
		return nil
	case !h.TransportProtocol.IsStream() || !(h.TransportProtocol.IsIPv4() || h.TransportProtocol.IsIPv6()):
		return fmt.Errorf("mtls: PROXY header for transport %#x refused: only TCP over IPv4 or IPv6 is accepted", byte(h.TransportProtocol))
	}
	if _, ok := h.SourceAddr.(*net.TCPAddr); !ok {
		return fmt.Errorf("mtls: PROXY header source %v is not a TCP address", h.SourceAddr)
	}
	return nil
}
