package mtls

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// peer is a verified client certificate.
type peer struct {
	leaf    *x509.Certificate
	serial  *big.Int
	issuer  *x509.Certificate
	resumed bool
}

func (p *peer) serialHex() string {
	if p == nil {
		return ""
	}
	return serialHex(p.serial)
}

// serialHex spells a serial as the CA and openssl do (upper-case hex, even length), so
// an admin can paste it from a log line into `imapgate cert revoke`.
func serialHex(n *big.Int) string {
	s := strings.ToUpper(n.Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

func (p *peer) subject() string {
	if p == nil {
		return ""
	}
	return p.leaf.Subject.String()
}

// newTLSConfig is the TLS policy: TLS 1.2 or later, modern AEAD suites only for 1.2, and
// a client certificate requested but verified by verifyPeer after the handshake, so that
// a rejected user gets a readable "* BYE [ALERT] …" instead of a bare TLS alert.
func newTLSConfig(o *Options) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: o.Certificates,
		ClientAuth:   tls.RequestClientCert,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"imap"},
		// Not used to verify (verifyPeer does that): with RequestClientCert the pool only
		// names the acceptable CAs in the CertificateRequest, which lets mail programs
		// offer the smartcard certificate instead of every certificate they know.
		ClientCAs: o.ClientRoots,
	}
	if len(o.SessionTicketKeys) > 0 {
		cfg.SetSessionTicketKeys(o.SessionTicketKeys)
	}
	if o.DisableSessionTickets {
		cfg.SessionTicketsDisabled = true
	}
	return cfg
}

// certReject is a refused certificate: the user sees Text in the BYE; the log gets
// Reason and the metric label Result.
type certReject struct {
	result string // metric label: no_cert, untrusted, expired, not_yet_valid, wrong_usage, revoked, crl_unavailable, invalid
	reply  *Reply
}

func reject(result, code, text, reason string) *certReject {
	return &certReject{result: result, reply: &Reply{Status: "BYE", Code: code, Text: text, Reason: reason}}
}

// verifyPeer checks the client certificate of a finished handshake: chain to the
// configured roots, clientAuth, validity at now, and the serial against a fresh CRL of
// its issuer. It runs on every handshake, resumed ones included, so a revoked
// certificate cannot come back through a session ticket.
func (st *state) verifyPeer(cs tls.ConnectionState, now time.Time) (*peer, *certReject) {
	if len(cs.PeerCertificates) == 0 {
		return nil, reject("no_cert", "ALERT",
			"No client certificate was presented. Insert your smartcard, then choose its certificate in your mail program.",
			"no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	issuer, rej := st.verifyChain(cs.PeerCertificates, now)
	if rej != nil {
		return nil, rej
	}
	store := st.crlFor(issuer)
	if store == nil {
		return nil, reject("crl_unavailable", "UNAVAILABLE",
			"Certificate status cannot be checked right now. Try again later or call the help desk.",
			fmt.Sprintf("no CRL configured for issuer %q", issuerName(issuer, leaf)))
	}
	snap, err := store.Fresh(now)
	if err != nil {
		return nil, reject("crl_unavailable", "UNAVAILABLE",
			"Certificate status cannot be checked right now. Try again later or call the help desk.",
			err.Error())
	}
	if snap.Revoked(leaf.SerialNumber) {
		return nil, reject("revoked", "ALERT",
			"Your certificate has been revoked. Call the help desk for a new smartcard certificate.",
			"certificate revoked (CRL "+snap.NumberString()+")")
	}
	return &peer{leaf: leaf, serial: leaf.SerialNumber, issuer: issuer, resumed: cs.DidResume}, nil
}

// verifyChain verifies the peer's chain at now and returns the leaf's issuer. Results
// are cached per state (the roots never change within one) by the hash of the presented
// certificates, so a user reconnecting or resuming does not pay for chain building and
// signature checks again; the validity window is still checked against now on every
// use, and revocation is checked by the caller every time.
func (st *state) verifyChain(certs []*x509.Certificate, now time.Time) (*x509.Certificate, *certReject) {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	if v, ok := st.chains.Load(key); ok {
		cv := v.(*chainResult)
		if !now.Before(cv.notBefore) && !now.After(cv.notAfter) {
			return cv.issuer, nil
		}
	}
	leaf := certs[0]
	inter := st.intermediates
	if len(certs) > 1 {
		inter = st.intermediates.Clone()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         st.opts.ClientRoots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, classifyVerifyError(leaf, err)
	}
	cv := &chainResult{notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for _, c := range chains[0][1:] {
		if c.NotBefore.After(cv.notBefore) {
			cv.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(cv.notAfter) {
			cv.notAfter = c.NotAfter
		}
	}
	if len(chains[0]) > 1 {
		cv.issuer = chains[0][1]
	}
	if st.chainCount.Add(1) > maxChainCache {
		st.chains.Clear()
		st.chainCount.Store(0)
	}
	st.chains.Store(key, cv)
	return cv.issuer, nil
}

// maxChainCache bounds the verified-chain cache; past it the cache starts over.
const maxChainCache = 50000

type chainResult struct {
	issuer              *x509.Certificate
	notBefore, notAfter time.Time
}

func issuerName(issuer, leaf *x509.Certificate) string {
	if issuer != nil {
		return issuer.Subject.String()
	}
	return leaf.Issuer.String()
}

// crlFor finds the CRL store whose issuer is cert (same name and same key).
func (st *state) crlFor(issuer *x509.Certificate) *crl.Store {
	if issuer == nil {
		return nil
	}
	for _, s := range st.opts.CRLs {
		ci := s.Issuer()
		if bytes.Equal(ci.RawSubject, issuer.RawSubject) && bytes.Equal(ci.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
			return s
		}
	}
	return nil
}

func classifyVerifyError(leaf *x509.Certificate, err error) *certReject {
	var inv x509.CertificateInvalidError
	var unk x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		if time.Now().Before(leaf.NotBefore) {
			return reject("not_yet_valid", "ALERT",
				"Your certificate is not valid yet. Check the date and time of your computer.",
				err.Error())
		}
		if time.Now().After(leaf.NotAfter) {
			return reject("expired", "ALERT",
				fmt.Sprintf("Your certificate expired on %s. Call the help desk to renew it.", leaf.NotAfter.UTC().Format("2006-01-02")),
				err.Error())
		}
		return reject("expired", "ALERT", "A certificate in your chain has expired. Call the help desk.", err.Error())
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return reject("wrong_usage", "ALERT",
			"This certificate is not for e-mail login (it lacks client authentication). Choose your smartcard certificate.",
			err.Error())
	case errors.As(err, &unk):
		return reject("untrusted", "ALERT",
			"This certificate was not issued by your organisation's mail CA. Choose your smartcard certificate.",
			err.Error())
	default:
		msg := err.Error()
		if strings.Contains(msg, "key usage") {
			return reject("wrong_usage", "ALERT", "This certificate is not for e-mail login. Choose your smartcard certificate.", msg)
		}
		return reject("invalid", "ALERT", "Your certificate was not accepted. Call the help desk.", msg)
	}
}
