package mtls

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/imapgate/imapgate/crl"
)

// registry is the set of live sessions, so that a new CRL can end the sessions of
// certificates it newly lists, and shutdown can end them all. Adding and removing is per
// connection and must not serialise the accept path, hence many small locks.
type registry struct {
	closed atomic.Bool
	shards [shards]registryShard
}

type registryShard struct {
	mu sync.Mutex
	m  map[*session]struct{}
}

func newRegistry() *registry {
	r := &registry{}
	for i := range r.shards {
		r.shards[i].m = map[*session]struct{}{}
	}
	return r
}

// add registers s, or returns false once shutdown has begun: a connection accepted
// just before (still reading its PROXY header, say) would otherwise start after the
// walk that ends every session, and keep Close waiting for as long as it lives. The
// closed flag is read under the shard lock that shutdown's walk also takes, so each
// session is either seen by the walk or sees the flag.
func (r *registry) add(s *session) bool {
	sh := &r.shards[shardOf(s.id)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r.closed.Load() {
		return false
	}
	sh.m[s] = struct{}{}
	return true
}

func (r *registry) remove(s *session) {
	sh := &r.shards[shardOf(s.id)]
	sh.mu.Lock()
	delete(sh.m, s)
	sh.mu.Unlock()
}

// each calls fn for every live session, outside the locks.
func (r *registry) each(fn func(*session)) {
	var live []*session
	for i := range r.shards {
		sh := &r.shards[i]
		live = live[:0]
		sh.mu.Lock()
		for s := range sh.m {
			live = append(live, s)
		}
		sh.mu.Unlock()
		for _, s := range live {
			fn(s)
		}
	}
}

// revoke ends every live session whose certificate, issued by store's CA, snap lists.
// It runs on the CRL poller's goroutine once per new CRL: a walk over live sessions is
// cheap next to the poll interval. Sessions are matched by issuer, not by store, so a
// reload that replaces a CRL source keeps revoking the sessions started before it.
func (r *registry) revoke(store *crl.Store, snap *crl.Snapshot, log *slog.Logger) {
	issuer := store.Issuer()
	r.each(func(s *session) {
		p := s.peer.Load()
		if p == nil || !sameCert(p.issuer, issuer) || !snap.Revoked(p.serial) {
			return
		}
		s.killNoted(byeRevoked, func() {
			s.srv.metrics.revokedSessions.Inc()
			s.log.Warn("session ended: certificate revoked", "event", "revoked", "result", "revoked", "reason", "CRL "+snap.NumberString()+" lists the certificate")
		})
	})
}

// orphans ends the sessions whose issuer no longer has a CRL source (a reload
// removed it): their revocation status can no longer be learnt, so they end.
func (r *registry) orphans(stores []*crl.Store) {
	r.each(func(s *session) {
		p := s.peer.Load()
		if p == nil {
			return
		}
		for _, st := range stores {
			if sameCert(p.issuer, st.Issuer()) {
				return
			}
		}
		s.killNoted(byeCRLSourceRemoved, func() {
			s.srv.metrics.crlUnavailableSessions.Inc()
			s.log.Warn("session ended: its CA has no CRL source any more", "event", "revoked", "result", "crl_unavailable", "reason", "reload removed the CRL source of the certificate's issuer")
		})
	})
}

// stale ends the sessions of issuer's certificates: its CRL went stale (why says how).
func (r *registry) stale(issuer *x509.Certificate, why error) {
	r.each(func(s *session) {
		p := s.peer.Load()
		if p == nil || !sameCert(p.issuer, issuer) {
			return
		}
		s.killNoted(byeCRLUnavailable, func() {
			s.srv.metrics.crlUnavailableSessions.Inc()
			s.log.Warn("session ended: the CRL of its CA is stale", "event", "revoked", "result", "crl_unavailable", "reason", why.Error())
		})
	})
}

// sameCert: same subject and key, the way crlFor pairs an issuer with its CRL.
func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.RawSubject, b.RawSubject) &&
		bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

// shutdown refuses new sessions from now on and ends every live one with reply.
func (r *registry) shutdown(reply *Reply) {
	r.closed.Store(true)
	r.each(func(s *session) { s.kill(reply) })
}
