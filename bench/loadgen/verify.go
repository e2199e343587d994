package loadgen

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// chainCache verifies the server's certificate chain once per distinct chain, as a
// mail client's certificate cache does (NSS keeps verified certificates for the
// process). The load generator shares the machine's cores with the server it measures;
// re-verifying the same chain on every connection spent about a third of its own
// handshake CPU, which the server then could not have. crypto/tls still checks the
// server's CertificateVerify signature on every handshake, and a chain that was never
// verified is verified in full.
type chainCache struct {
	roots *x509.CertPool
	name  string
	mu    sync.Mutex
	good  map[[sha256.Size]byte]bool
}

// install makes cfg verify through the cache: crypto/tls's own verification is
// switched off (InsecureSkipVerify) and VerifyConnection, which crypto/tls calls on
// every handshake, resumed ones included, does it instead.
func (cc *chainCache) install(cfg *tls.Config) {
	cc.roots, cc.name = cfg.RootCAs, cfg.ServerName
	cc.good = map[[sha256.Size]byte]bool{}
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = cc.verify
}

func (cc *chainCache) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("loadgen: the server sent no certificate")
	}
	h := sha256.New()
	for _, c := range cs.PeerCertificates {
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	cc.mu.Lock()
	ok := cc.good[k]
	cc.mu.Unlock()
	if ok {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: cc.roots, Intermediates: inter, DNSName: cc.name}); err != nil {
		return fmt.Errorf("loadgen: server certificate: %w", err)
	}
	cc.mu.Lock()
	cc.good[k] = true
	cc.mu.Unlock()
	return nil
}
