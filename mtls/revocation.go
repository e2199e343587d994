package mtls

import (
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
// cheap next to the poll interval.
func (r *registry) revoke(store *crl.Store, snap *crl.Snapshot, log *slog.Logger) {
	r.m.Range(func(k, _ any) bool {
		s := k.(*session)
		p := s.peer.Load()
		if p == nil || p.store != store || !snap.Revoked(p.serial) {
			return true
		}
		s.srv.metrics.revokedSessions.Inc()
		s.log.Warn("session ended: certificate revoked", "event", "revoked", "result", "revoked", "reason", "CRL "+snap.NumberString()+" lists the certificate")
		s.kill(&Reply{Status: "BYE", Code: "ALERT", Text: "Your certificate has been revoked. Call the help desk for a new smartcard certificate."})
		return true
	})
}

// killAll ends every session with r (shutdown).
func (r *registry) killAll(reply *Reply) {
	r.m.Range(func(k, _ any) bool {
		k.(*session).kill(reply)
		return true
	})
}
