package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/pemutil"
)

// tlsRenewBefore: the CA's own HTTPS certificate is renewed once less than
// this is left of it.
const tlsRenewBefore = 30 * 24 * time.Hour

// TLSConfig is the API's TLS policy: TLS 1.2+, the CA's own server certificate,
// client certificates optional at the handshake (the public paths need none) and
// verified against this CA's root when given. The certificate is renewed now if
// it is due, and later while serving (see certificate).
func (s *Server) TLSConfig() (*tls.Config, error) {
	cert, err := s.ca.loadTLSCert()
	if err != nil {
		return nil, err
	}
	revoked, err := s.ca.recordTLSCert(cert.Leaf)
	if err != nil {
		return nil, err
	}
	if revoked || s.ca.tlsDue(cert.Leaf) {
		if cert, err = s.ca.renewTLSCert(cert.Leaf); err != nil {
			return nil, err
		}
	}
	s.tlsCert.Store(&cert)
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.root)
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      pool,
	}, nil
}

// certificate serves the current certificate. A handshake that finds it due
// starts one renewal in the background and is served the current one, which
// has weeks left; the handshakes after the renewal get the new one. The check
// is a time comparison, so it costs a handshake nothing.
func (s *Server) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := s.tlsCert.Load()
	if s.ca.tlsDue(cert.Leaf) && s.ca.now().UnixNano() >= s.retryAt.Load() {
		s.startTLSRenewal(cert)
	}
	return cert, nil
}

// startTLSRenewal renews the served certificate in the background, once at
// a time; handshakes go on with cert until the new one is stored.
func (s *Server) startTLSRenewal(cert *tls.Certificate) {
	if s.renewing.CompareAndSwap(false, true) {
		go func() {
			defer s.renewing.Store(false)
			renewed, err := s.ca.renewTLSCert(cert.Leaf)
			if err != nil {
				s.retryAt.Store(s.ca.now().Add(time.Minute).UnixNano())
				s.log.Error("ca: renewing the CA's TLS certificate failed; retrying in a minute",
					"not_after", cert.Leaf.NotAfter, "error", err)
				return
			}
			s.tlsCert.Store(&renewed)
		}()
	}
}

// tlsRevoked is called after a revocation through this node: if it was
// the node's own HTTPS certificate, a new one is issued at once.
func (s *Server) tlsRevoked(serial string) {
	if cert := s.tlsCert.Load(); cert != nil && SerialHex(cert.Leaf.SerialNumber) == serial {
		s.log.Warn("ca: the CA's own TLS certificate was revoked; issuing a new one", "serial", serial)
		s.startTLSRenewal(cert)
	}
}

// issueOwnTLSCert issues the CA's HTTPS certificate for the host of url
// (server profile, recorded like any certificate) and stores the pair.
func (c *CA) issueOwnTLSCert(ctx context.Context, by Requester) error {
	u, err := c.cfg.apiURL()
	if err != nil {
		return err
	}
	var dns []string
	var ips []net.IP
	if ip := net.ParseIP(u.Hostname()); ip != nil {
		ips = []net.IP{ip}
	} else {
		dns = []string{u.Hostname()}
	}
	cert, err := c.newServerCert(ctx, dns, ips, tlsValidity, KindCATLS, by)
	if err != nil {
		return fmt.Errorf("ca: TLS certificate: %w", err)
	}
	return c.storeTLSCert(cert.Leaf, cert.PrivateKey.(crypto.Signer))
}

// recordTLSCert records a TLS certificate made before the CA recorded its
// own (or put in place by hand), so it can be listed and revoked, and says
// whether it is revoked.
func (c *CA) recordTLSCert(leaf *x509.Certificate) (revoked bool, err error) {
	if _, err := c.lookup(leaf.SerialNumber); errors.Is(err, ErrNotFound) {
		if err := c.db.StoreCertificate(leaf); err != nil {
			return false, fmt.Errorf("ca: record the TLS certificate: %w", err)
		}
		rec := newRecord(leaf, "", "", "", Requester{Subject: "imapgate ca serve"})
		rec.Kind, rec.DNSNames, rec.IPAddresses = KindCATLS, leaf.DNSNames, ipStrings(leaf.IPAddresses)
		if kt, err := checkKey(leaf.PublicKey); err == nil {
			rec.KeyType = kt
		}
		if err := c.putRecord(rec); err != nil {
			return false, fmt.Errorf("ca: record the TLS certificate: %w", err)
		}
		_, _ = c.writeAudit(context.Background(), "", AuditEntry{Action: "record-ca-tls", Kind: KindCATLS, Serial: rec.Serial,
			User: strings.Join(append(append([]string{}, rec.DNSNames...), rec.IPAddresses...), ", "), Actor: "imapgate ca serve", Result: resultOK,
			Reason: "the CA's TLS certificate was not recorded yet"})
	} else if err != nil {
		return false, fmt.Errorf("ca: TLS certificate: %w", err)
	}
	return c.IsRevoked(leaf)
}

func (c *CA) tlsDue(leaf *x509.Certificate) bool {
	return leaf.NotAfter.Sub(c.now()) < tlsRenewBefore
}

// loadTLSCert reads tls.crt and tls_key.pem. A renewal that stopped between its
// two renames (see storeTLSCert) left the new key in place and the new
// certificate in tls.crt.new: that is finished here.
func (c *CA) loadTLSCert() (tls.Certificate, error) {
	crtPath, keyPath := c.cfg.path(TLSCertFile), c.cfg.path(TLSKeyFile)
	cert, err := tls.LoadX509KeyPair(crtPath, keyPath)
	if err != nil {
		if _, nerr := tls.LoadX509KeyPair(crtPath+".new", keyPath); nerr == nil {
			if rerr := os.Rename(crtPath+".new", crtPath); rerr == nil {
				c.log.Warn("ca: finished installing a renewed TLS certificate that was interrupted", "file", crtPath)
				cert, err = tls.LoadX509KeyPair(crtPath, keyPath)
			}
		}
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: TLS certificate: %w", err)
	}
	return cert, nil
}

// renewTLSCert issues the CA's HTTPS certificate again, for the same names, with
// a new key, and saves it. A certificate that cannot be saved is still served:
// the next start finds the old one due and renews it again.
func (c *CA) renewTLSCert(old *x509.Certificate) (tls.Certificate, error) {
	cert, err := c.newServerCert(context.Background(), old.DNSNames, old.IPAddresses, tlsValidity, KindCATLS,
		Requester{Subject: "imapgate ca serve (TLS renewal)"})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: renew TLS certificate: %w", err)
	}
	leaf := cert.Leaf
	if err := c.storeTLSCert(leaf, cert.PrivateKey.(crypto.Signer)); err != nil {
		c.log.Error("ca: renewed the CA's TLS certificate but could not save it; it is served from memory and renewed again at the next start",
			"not_after", leaf.NotAfter, "error", err)
	} else {
		c.log.Info("ca: renewed the CA's TLS certificate", "not_after", leaf.NotAfter, "serial", SerialHex(leaf.SerialNumber))
	}
	return cert, nil
}

// storeTLSCert replaces tls.crt and tls_key.pem. Each is written in full (and
// synced) beside its final name, the key 0600, then renamed over it, key first:
// a stop before the renames keeps the old pair; between them, loadTLSCert
// finishes the job.
func (c *CA) storeTLSCert(leaf *x509.Certificate, key crypto.Signer) error {
	crtPath, keyPath := c.cfg.path(TLSCertFile), c.cfg.path(TLSKeyFile)
	blk, err := pemutil.Serialize(key)
	if err != nil {
		return err
	}
	if err := writeFileSync(keyPath+".new", pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	if err := writeFileSync(crtPath+".new", encodeCerts(leaf, c.inter), 0o644); err != nil {
		os.Remove(keyPath + ".new")
		return err
	}
	if err := os.Rename(keyPath+".new", keyPath); err != nil {
		return err
	}
	if err := os.Rename(crtPath+".new", crtPath); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(crtPath)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// writeFileSync creates path afresh with mode (a leftover is removed, so the
// mode is never an older file's) and syncs it to disk.
func writeFileSync(path string, b []byte, mode os.FileMode) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
