package mtls_test

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/mtls"
)

// TestProxyProtocolHostile: what a PROXY v2 header may and may not do. From a trusted
// balancer: LOCAL (a health check) is the balancer itself; a header split over several
// TCP segments still counts; AF_UNIX (no address to limit or pass on) and no header at
// all are refused. From an untrusted address a header is never read as one: the client
// cannot choose its own address.
func TestProxyProtocolHostile(t *testing.T) {
	spoofed := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 23), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 993}
	header := func(h *proxyproto.Header) []byte {
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tcp4 := header(&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4, SourceAddr: spoofed, DestinationAddr: dst})
	for _, tc := range []struct {
		name    string
		trusted string
		chunks  [][]byte // written one by one with a pause between
		served  bool
		wantLog string // in the front's log
		notLog  string
	}{
		{"local from trusted", "127.0.0.0/8", [][]byte{header(&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL})}, true, `"remote_ip":"127.0.0.1"`, ""},
		{"split header", "127.0.0.0/8", [][]byte{tcp4[:5], tcp4[5:14], tcp4[14:]}, true, `"remote_ip":"198.51.100.23"`, ""},
		{"af_unix", "127.0.0.0/8", [][]byte{header(&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UnixStream,
			SourceAddr: &net.UnixAddr{Net: "unix", Name: "/run/client"}, DestinationAddr: &net.UnixAddr{Net: "unix", Name: "/run/front"}})}, false, "only TCP over IPv4 or IPv6", ""},
		{"udp", "127.0.0.0/8", [][]byte{header(&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UDPv4, SourceAddr: &net.UDPAddr{IP: spoofed.IP, Port: 1}, DestinationAddr: &net.UDPAddr{IP: dst.IP, Port: 993}})}, false, "only TCP over IPv4 or IPv6", ""},
		{"no header from trusted", "127.0.0.0/8", nil, false, "", `"msg":"handshake ok"`},
		{"header from untrusted", "10.0.0.0/8", [][]byte{tcp4}, false, "", "198.51.100.23"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{backendAddr: "127.0.0.1:1", mod: func(o *mtls.Options) {
				o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trusted)}
				o.HandshakeTimeout = 3 * time.Second // the no-header case waits it out
			}})
			conn, err := net.DialTimeout("tcp", e.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for i, c := range tc.chunks {
				if i > 0 {
					time.Sleep(50 * time.Millisecond) // separate segments
				}
				if _, err := conn.Write(c); err != nil {
					t.Fatal(err)
				}
			}
			tconn := tls.Client(conn, e.clientTLS(e.alice))
			tconn.SetDeadline(time.Now().Add(20 * time.Second))
			served := false
			if err := tconn.Handshake(); err == nil {
				line, err := newLineConn(t, tconn).readLine()
				served = err == nil && strings.HasPrefix(line, "* OK")
			}
			if served != tc.served {
				t.Fatalf("served %v, want %v", served, tc.served)
			}
			if tc.wantLog != "" {
				waitFor(t, e.logs, tc.wantLog)
			}
			if tc.notLog != "" && strings.Contains(e.logs.String(), tc.notLog) {
				t.Fatalf("log has %q", tc.notLog)
			}
		})
	}
}
