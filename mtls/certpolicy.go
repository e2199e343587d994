package mtls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
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
	names   *certNames // the serial and subject as the log spells them
}

// certNames are a certificate's serial and subject spelt for logs, throttle keys and
// lines: worked out once per verified chain (the chain cache keeps them), not per
// connection — pkix.Name.String and big.Int.Text were 1.6 % of a handshake's CPU.
type certNames struct {
	serial, subject string
}

func newCertNames(leaf *x509.Certificate) *certNames {
	return &certNames{serial: serialHex(leaf.SerialNumber), subject: leaf.Subject.String()}
}

func (p *peer) serialHex() string {
	if p == nil {
		return ""
	}
	return p.names.serial
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
	return p.names.subject
}

// certReject is a refused certificate: the user sees Text in the BYE; the log gets
// Reason and the metric label Result.
type certReject struct {
	result string // metric label: no_cert, untrusted, expired, not_yet_valid, wrong_usage, revoked, crl_unavailable, invalid
	reply  *Reply
}

func reject(result string, bye *Reply, reason string) *certReject {
	return &certReject{result: result, reply: bye.withReason(reason)}
}

// verifyPeer checks the client certificate of a finished handshake: chain to the
// configured roots, clientAuth, validity at now, and revocation (checkRevocation). It
// runs on every handshake, resumed ones included, so a revoked certificate cannot come
// back through a session ticket.
func (st *state) verifyPeer(cs tls.ConnectionState, now time.Time) (*peer, crlSeen, *certReject) {
	if len(cs.PeerCertificates) == 0 {
		return nil, crlSeen{}, reject("no_cert", byeNoCert, "no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	cv, rej := st.verifyChain(cs.PeerCertificates, now)
	if rej != nil {
		return nil, crlSeen{}, rej
	}
	seen, rej := st.revocation(leaf, cv.issuer, now)
	if rej != nil {
		return nil, crlSeen{}, rej
	}
	return &peer{leaf: leaf, serial: leaf.SerialNumber, issuer: cv.issuer, resumed: cs.DidResume, names: cv.names}, seen, nil
}

// crlSeen is the CRL a revocation check found the certificate absent from: its state,
// store and snapshot. It lives only as long as the handshake (a session must not keep
// an old CRL in memory).
type crlSeen struct {
	st    *state
	store *crl.Store
	snap  *crl.Snapshot
}

// checkRevocation refuses leaf unless its issuer has a CRL source in st whose CRL is
// fresh at now and does not list leaf: revocation status unknown means no. The
// handshake looks twice, in verifyPeer and again once the session is registered
// (recheckRevocation).
func (st *state) checkRevocation(leaf, issuer *x509.Certificate, now time.Time) *certReject {
	_, rej := st.revocation(leaf, issuer, now)
	return rej
}

// revocation is checkRevocation, also saying which CRL it looked in.
func (st *state) revocation(leaf, issuer *x509.Certificate, now time.Time) (crlSeen, *certReject) {
	store := st.crlFor(issuer)
	if store == nil {
		return crlSeen{}, reject("crl_unavailable", byeCRLUnavailable,
			fmt.Sprintf("no CRL configured for issuer %q", issuerName(issuer, leaf)))
	}
	snap, err := store.Fresh(now)
	if err != nil {
		return crlSeen{}, reject("crl_unavailable", byeCRLUnavailable, err.Error())
	}
	if snap.Revoked(leaf.SerialNumber) {
		return crlSeen{}, reject("revoked", byeRevoked, "certificate revoked (CRL "+snap.NumberString()+")")
	}
	return crlSeen{st: st, store: store, snap: snap}, nil
}

// recheckRevocation is the handshake's second look, in st, the configuration of now,
// once the session is registered: a CRL may have landed or gone stale since the first
// (seen), or a reload may have replaced the CRL sources, and the registry's walks
// only see the session from its registration on. When the configuration and its CRL
// are still the ones seen, the answer of the same immutable snapshot cannot have
// changed: only the freshness is asked again, not the store's match and the serial's
// lookup. A CRL or reload landing after this look walks the registry, which holds the
// session by then.
func (st *state) recheckRevocation(p *peer, seen crlSeen, now time.Time) *certReject {
	if st == seen.st && seen.store != nil {
		if snap, err := seen.store.Fresh(now); err == nil && snap == seen.snap {
			return nil
		}
	}
	return st.checkRevocation(p.leaf, p.issuer, now)
}

// verifyChain verifies the peer's chain at now and returns the leaf's issuer (and the
// leaf's names for the log) as the cache holds them. Results
// are cached per state (the roots never change within one) by the hash of the presented
// certificates, so a user reconnecting or resuming does not pay for chain building and
// signature checks again; the validity window is still checked against now on every
// use, and revocation is checked by the caller every time.
func (st *state) verifyChain(certs []*x509.Certificate, now time.Time) (*chainResult, *certReject) {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	if v, ok := st.chains.Load(key); ok {
		cv := v.(*chainResult)
		if !now.Before(cv.notBefore) && !now.After(cv.notAfter) {
			return cv, nil
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
	if rej := leafPolicy(leaf); rej != nil {
		return nil, rej // not cached: a refused chain is looked at again next time
	}
	cv := &chainResult{notBefore: leaf.NotBefore, notAfter: leaf.NotAfter, names: newCertNames(leaf)}
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
	return cv, nil
}

// maxChainCache bounds the verified-chain cache; past it the cache starts over.
const maxChainCache = 50000

type chainResult struct {
	issuer              *x509.Certificate
	notBefore, notAfter time.Time
	names               *certNames // the leaf's, keyed by the same hash as the chain
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
			return reject("not_yet_valid", byeNotYetValid, err.Error())
		}
		if time.Now().After(leaf.NotAfter) {
			return reject("expired", byeCertExpired(leaf.NotAfter.UTC().Format("2006-01-02")), err.Error())
		}
		return reject("expired", byeChainExpired, err.Error())
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return reject("wrong_usage", byeNoClientAuth, err.Error())
	case errors.As(err, &unk):
		return reject("untrusted", byeUntrusted, err.Error())
	default:
		msg := err.Error()
		if strings.Contains(msg, "key usage") {
			return reject("wrong_usage", byeWrongUsage, msg)
		}
		return reject("invalid", byeInvalidCert, msg)
	}
}

// leafPolicy is what the front demands of a user certificate beyond a valid chain. It
// runs once per chain (verified chains are cached).
//
//   - The extended key usage clientAuth, written in the leaf: Go's verifier takes a
//     leaf without any EKU as good for every purpose.
//   - A key as strong as the CA issues: RSA of 2048 bits or more, EC on P-256 or
//     P-384. Not Ed25519: imapgate's CA does not issue it (nor do smartcards make it).
//   - No role: a certificate with a SAN URI urn:imapgate:role:… is a help-desk or
//     admin credential for the CA's API, never a mail login (in cn mode an agent
//     named "bob" would otherwise log in as bob).
func leafPolicy(leaf *x509.Certificate) *certReject {
	if role := roleURI(leaf); role != "" {
		return reject("role_certificate", byeRoleCertificate, "the certificate carries the role URI "+role)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return reject("wrong_usage", byeNoClientAuth, "the certificate does not list the extended key usage clientAuth")
	}
	if why := weakKey(leaf.PublicKey); why != "" {
		return reject("weak_key", byeWeakKey, why)
	}
	return nil
}

// minRSABits is the smallest RSA key the front accepts.
const minRSABits = 2048

// weakKey says why a client certificate's key is refused, or "".
func weakKey(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return fmt.Sprintf("RSA key of %d bits; at least %d are required", n, minRSABits)
		}
		return ""
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return ""
		}
		return fmt.Sprintf("EC key on curve %s; P-256 or P-384 are required", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return "Ed25519 key; the CA issues RSA (2048 bits or more) and EC P-256/P-384 only"
	default:
		return fmt.Sprintf("%T key; RSA (2048 bits or more) or EC P-256/P-384 are required", pub)
	}
}

// rolePrefix starts the SAN URI of the CA's role certificates (the ca package's
// RoleURIPrefix; mtls does not import ca).
const rolePrefix = "urn:imapgate:role:"

// roleURI is the leaf's first role URI, or "". A URN's scheme and namespace are
// case-insensitive, so is the comparison.
func roleURI(leaf *x509.Certificate) string {
	for _, u := range leaf.URIs {
		if s := u.String(); len(s) >= len(rolePrefix) && strings.EqualFold(s[:len(rolePrefix)], rolePrefix) {
			return s
		}
	}
	return ""
}
