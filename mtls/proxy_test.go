package mtls

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// pipeListener hands out one in-memory connection whose far end writes data, as if
// from a trusted balancer at 10.0.0.5.
type pipeListener struct {
	conns chan net.Conn
}

type fromAddr struct {
	net.Conn
	remote net.Addr
}

func (c fromAddr) RemoteAddr() net.Addr { return c.remote }

func (l *pipeListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 993} }

// FuzzProxyHeader feeds arbitrary bytes, as a trusted balancer's connection, through
// the front's PROXY listener: it must not panic or hang, and the address it hands on
// is either the balancer's own or a valid TCP client address.
func FuzzProxyHeader(f *testing.F) {
	for _, h := range []*proxyproto.Header{
		{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.IPv4(198, 51, 100, 23), Port: 40000}, DestinationAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 993}},
		{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 40000}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 993}},
		{Version: 2, Command: proxyproto.LOCAL},
		{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UnixStream,
			SourceAddr: &net.UnixAddr{Net: "unix", Name: "/run/x"}, DestinationAddr: &net.UnixAddr{Net: "unix", Name: "/run/y"}},
		{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.IPv4(198, 51, 100, 23), Port: 40000}, DestinationAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 993}},
	} {
		b, err := h.Format()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(b, "\x16\x03\x01"...))
	}
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	balancer := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 5555}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	f.Fuzz(func(t *testing.T, data []byte) {
		pl := &pipeListener{conns: make(chan net.Conn, 1)}
		ln := newProxyListener(pl, func() []netip.Prefix { return trusted }, 2*time.Second, slog.New(slog.DiscardHandler))
		near, far := net.Pipe()
		pl.conns <- fromAddr{Conn: near, remote: balancer}
		go func() {
			far.Write(data)
			far.Close()
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		defer c.Close()
		ra := c.RemoteAddr()
		if ra.String() != balancer.String() {
			tcp, ok := ra.(*net.TCPAddr)
			if !ok || !addrPort(tcp).Addr().IsValid() {
				t.Fatalf("handed on address %#v", ra)
			}
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		rest, _ := io.ReadAll(c)
		if len(rest) > len(data) || !bytes.HasSuffix(data, rest) {
			t.Fatalf("read %q, not a suffix of the input", rest)
		}
	})
}
