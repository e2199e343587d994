package mtls

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// runner is a front started from a Config (RunConfig): the server, its listeners and
// CRL pollers, and the configuration they came from. apply moves it to a new one.
type runner struct {
	ctx    context.Context // the caller's: ends the front
	runCtx context.Context // the listeners' and pollers': ends after the drain
	srv    *Server
	log    *slog.Logger

	cfg  *Config
	opts Options

	errc       chan error
	lns        map[Mode]net.Listener
	pop3       map[Mode]net.Listener // pop3config.go
	smtp       map[Mode]net.Listener // smtpconfig.go
	metricsSrv *http.Server
	stopCRLs   context.CancelFunc
}

// startCRLs runs the pollers of r.opts.CRLs under a context of their own, so that a
// reload can stop them.
func (r *runner) startCRLs() {
	ctx, cancel := context.WithCancel(r.runCtx)
	for _, st := range r.opts.CRLs {
		go st.Run(ctx)
	}
	r.stopCRLs = cancel
}

// apply reloads: it checks next, binds its new addresses and loads its new CRL sources
// before anything changes, so that a reload that cannot be had changes nothing and the
// front keeps serving. Then the server takes the new settings (Server.Reload, which
// also ends the sessions a new CRL set no longer covers), the pollers are swapped and
// the listeners that moved are served.
func (r *runner) apply(next *Config) error {
	if err := next.prepareStateDir(); err != nil {
		return err
	}
	o, err := next.Options(r.log)
	if err != nil {
		return err
	}
	eps, err := openEndpoints(r.cfg, next)
	if err != nil {
		return err
	}
	peps, err := openPOP3(r.cfg, next)
	if err != nil {
		eps.close()
		return err
	}
	seps, err := openSMTP(r.cfg, next)
	if err != nil {
		eps.close()
		peps.close()
		return err
	}
	sameCRLs := reflect.DeepEqual(next.CRL, r.cfg.CRL)
	if sameCRLs {
		o.CRLs = r.opts.CRLs // keep the running, polled stores
	} else if err := loadCRLs(r.ctx, o.CRLs); err != nil {
		eps.close()
		peps.close()
		seps.close()
		return err
	}
	if err := r.srv.Reload(o); err != nil {
		eps.close()
		peps.close()
		seps.close()
		return err
	}
	warnFrontCert(&o, "reload")
	if !sameCRLs {
		// The new sources are live: start them, stop the old ones.
		stopOld := r.stopCRLs
		r.opts.CRLs = o.CRLs
		r.startCRLs()
		stopOld()
		r.log.Info("CRL sources replaced", "sources", len(o.CRLs))
	}
	r.use(eps, next)
	r.usePOP3(peps, next)
	r.useSMTP(seps, next)
	r.cfg, r.opts = next, o
	return nil
}

// use serves the endpoints opened for cfg: a listener that moved is served on the new
// address and the old one closes (its sessions go on); a removed STARTTLS listener just
// closes; a moved metrics listener is restarted.
func (r *runner) use(eps *endpoints, cfg *Config) {
	for _, mode := range []Mode{ImplicitTLS, StartTLS} {
		if ln := eps.lns[mode]; ln != nil {
			if old := r.lns[mode]; old != nil {
				old.Close()
			}
			r.serve(ln, mode)
		} else if mode == StartTLS && cfg.StartTLSListen == "" && r.lns[mode] != nil {
			r.lns[mode].Close()
			delete(r.lns, mode)
		}
	}
	if r.metricsSrv == nil || cfg.MetricsListen != r.cfg.MetricsListen {
		if r.metricsSrv != nil {
			r.metricsSrv.Close()
			r.metricsSrv = nil
		}
		if eps.metrics != nil {
			r.serveMetrics(eps.metrics)
		}
	}
}

// endpoints are listeners opened for a configuration.
type endpoints struct {
	lns     map[Mode]net.Listener
	metrics net.Listener
}

func (e *endpoints) close() {
	if e == nil {
		return
	}
	for _, ln := range e.lns {
		ln.Close()
	}
	if e.metrics != nil {
		e.metrics.Close()
	}
}

// openEndpoints binds the addresses of next that differ from those of cur (all
// of them when cur is nil). On any failure it closes what it opened.
func openEndpoints(cur, next *Config) (*endpoints, error) {
	var old Config
	if cur != nil {
		old = *cur
	}
	e := &endpoints{lns: map[Mode]net.Listener{}}
	for _, b := range []struct {
		mode     Mode
		old, new string
	}{{ImplicitTLS, old.Listen, next.Listen}, {StartTLS, old.StartTLSListen, next.StartTLSListen}} {
		if b.new == "" || (cur != nil && b.old == b.new) {
			continue
		}
		ln, err := net.Listen("tcp", b.new)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("front: listen on %s: %w (is another server on that port?)", b.new, err)
		}
		e.lns[b.mode] = ln
	}
	if next.MetricsListen != "" && (cur == nil || old.MetricsListen != next.MetricsListen) {
		ln, err := net.Listen("tcp", next.MetricsListen)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("front: metrics listener on %s: %w", next.MetricsListen, err)
		}
		e.metrics = ln
	}
	return e, nil
}

// loadCRLs loads every new CRL source once; a reload that cannot is refused, so
// the front never swaps in a source that would refuse every client.
func loadCRLs(ctx context.Context, stores []*crl.Store) error {
	for _, st := range stores {
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := st.Refresh(lctx)
		cancel()
		if err == nil {
			// A correctly signed but expired CRL (an old file, a stalled
			// mirror) loads fine, yet would end every session of its CA at
			// the first poll.
			_, err = st.Fresh(time.Now())
		}
		if err != nil {
			return fmt.Errorf("new CRL source for %s: %w", st.Issuer().Subject, err)
		}
	}
	return nil
}
