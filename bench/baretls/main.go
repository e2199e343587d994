// Command baretls is the anchor of the benchmark (scripts/bench.sh, docs/performance.md):
// a bare Go crypto/tls server doing only what an mTLS gate must — require a client
// certificate verified against the roots, look its serial up in a CRL — then write the
// front's greeting line and read until the client leaves. It is a benchmark fixture,
// not part of imapgate.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"time"
)

const greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN] imapgate ready.\r\n"

func main() {
	listen := flag.String("listen", "127.0.0.1:9931", "address to listen on")
	certFile := flag.String("cert", "", "server certificate chain (PEM)")
	keyFile := flag.String("key", "", "its key (PEM)")
	caFile := flag.String("client-ca", "", "roots for client certificates (PEM)")
	crlFile := flag.String("crl", "", "CRL of the client CA (DER or PEM), checked with its signature once at start")
	pprofAddr := flag.String("pprof", "", "optional loopback address of /debug/pprof/ (for the benchmark's CPU profile)")
	flag.Parse()
	if *pprofAddr != "" {
		go func() {
			if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
				fmt.Fprintln(os.Stderr, "baretls: pprof:", err)
			}
		}()
	}
	// run serves until it fails.
	err := run(*listen, *certFile, *keyFile, *caFile, *crlFile)
	fmt.Fprintln(os.Stderr, "baretls:", err)
	os.Exit(1)
}

func run(listen, certFile, keyFile, caFile, crlFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("client CA file holds no certificate")
	}
	revoked, err := loadCRL(crlFile, caPEM)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		// VerifyConnection runs on resumed handshakes too, like the front's CRL check.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if _, ok := revoked[string(cs.PeerCertificates[0].SerialNumber.Bytes())]; ok {
				return errors.New("certificate revoked")
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("baretls listening on %s (%d revoked serials)\n", ln.Addr(), len(revoked))
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go serve(tls.Server(c, cfg))
	}
}

func serve(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	if _, err := io.WriteString(c, greeting); err != nil {
		return
	}
	io.Copy(io.Discard, c)
}

// loadCRL reads the CRL, checks its signature against one of the CA certificates and
// returns its serials.
func loadCRL(path string, caPEM []byte) (map[string]struct{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil {
		data = b.Bytes
	}
	list, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	var checked bool
	for rest := caPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err == nil && list.CheckSignatureFrom(ca) == nil {
			checked = true
			break
		}
	}
	if !checked {
		return nil, errors.New("CRL: not signed by the client CA")
	}
	m := make(map[string]struct{}, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		m[string(e.SerialNumber.Bytes())] = struct{}{}
	}
	return m, nil
}
