package mtls_test

import (
	"net"
	"net/netip"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/mtls"
)

// TestPerAddressLimitsIPv6: through a trusted balancer (PROXY v2), clients from two
// addresses of one IPv6 /64 share max_connections_per_ip; a client from another /64
// does not.
func TestPerAddressLimitsIPv6(t *testing.T) {
	e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.Limits = mtls.Limits{MaxConnectionsPerIP: 1}
	}})
	dialFrom := func(src string) (*lineConn, error) {
		tc, err := dialViaProxy(e, e.alice, &proxyproto.Header{
			Version:           2,
			Command:           proxyproto.PROXY,
			TransportProtocol: proxyproto.TCPv6,
			SourceAddr:        &net.TCPAddr{IP: net.ParseIP(src), Port: 40000},
			DestinationAddr:   &net.TCPAddr{IP: net.ParseIP("2001:db8:ffff::1"), Port: 993},
		})
		if err != nil {
			return nil, err
		}
		c := newLineConn(t, tc)
		if _, err := c.readLine(); err != nil {
			return nil, err
		}
		return c, nil
	}
	if _, err := dialFrom("2001:db8:1:2::1"); err != nil {
		t.Fatalf("first client of the /64: %v", err)
	}
	if _, err := dialFrom("2001:db8:1:2::2"); err == nil {
		t.Fatal("a second address of the same /64 got past max_connections_per_ip 1")
	}
	waitFor(t, e.logs, "max_connections_per_ip (1)")
	if _, err := dialFrom("2001:db8:1:3::1"); err != nil {
		t.Fatalf("a client of another /64: %v", err)
	}
}
