package mtls_test

import (
	"crypto/tls"
	"net"
	"testing"
)

// localListen listens on a free loopback port.
func localListen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// tlsListen listens with TLS on a free loopback port.
func tlsListen(t testing.TB, cfg *tls.Config) net.Listener {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveStub runs handle for every connection to ln (closing each afterwards)
// until the test ends, and returns ln. Stub peers stand in where a real part
// cannot be made to misbehave on purpose; each test says why it uses one.
func serveStub(t testing.TB, ln net.Listener, handle func(net.Conn)) net.Listener {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln
}
