package mtls

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"sync"

	"github.com/imapgate/imapgate/crl"
)

// registry is the set of live sessions, so that a new CRL can end the sessions of
// certificates it newly lists. Adding and removing is per connection and must not
// serialise the accept path, hence a sync.Map rather than a mutex-guarded map.
type registry struct {
	m sync.Map // *session → struct{}
}

func newRegistry() *registry { return &registry{} }

func (r *registry) add(s *session)    { r.m.Store(s, struct{}{}) }
func (r *registry) remove(s *session) { r.m.Delete(s) }

// revoke ends every live session whose certificate, issued by store's CA, snap lists.
// It runs on the CRL poller's goroutine once per new CRL: a walk over live sessions is
// cheap next to the poll interval. Sessions are matched by issuer, not by store, so a
// reload that replaces a CRL source keeps revoking the sessions started before it.
func (r *registry) revoke(store *crl.Store, snap *crl.Snapshot, log *slog.Logger) {
	issuer := store.Issuer()
	r.m.Range(func(k, _ any) bool {
		s := k.(*session)
		p := s.peer.Load()
		if p == nil || !sameCert(p.issuer, issuer) || !snap.Revoked(p.serial) {
			return true
		}
		s.srv.metrics.revokedSessions.Inc()
		s.log.Warn("session ended: certificate revoked", "event", "revoked", "result", "revoked", "reason", "CRL "+snap.NumberString()+" lists the certificate")
		s.kill(&Reply{Status: "BYE", Code: "ALERT", Text: "Your certificate has been revoked. Call the help desk for a new smartcard certificate."})
		return true
	})
}

// orphans ends the sessions whose issuer no longer has a CRL source (a reload
// removed it): their revocation status can no longer be learnt, so they end.
func (r *registry) orphans(stores []*crl.Store) {
	r.m.Range(func(k, _ any) bool {
		s := k.(*session)
		p := s.peer.Load()
		if p == nil {
			return true
		}
		for _, st := range stores {
			if sameCert(p.issuer, st.Issuer()) {
				return true
			}
		}
		s.log.Warn("session ended: its CA has no CRL source any more", "event", "revoked", "result", "crl_unavailable", "reason", "reload removed the CRL source of the certificate's issuer")
		s.kill(&Reply{Status: "BYE", Code: "UNAVAILABLE", Text: "Certificate status cannot be checked right now. Reconnect or call the help desk."})
		return true
	})
}

// sameCert: same subject and key, the way crlFor pairs an issuer with its CRL.
func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.RawSubject, b.RawSubject) &&
		bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

// killAll ends every session with r (shutdown).
func (r *registry) killAll(reply *Reply) {
	r.m.Range(func(k, _ any) bool {
		k.(*session).kill(reply)
		return true
	})
}
