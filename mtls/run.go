package mtls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"time"

	"github.com/imapgate/imapgate/crl"
)

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

// Check loads the config file at path and everything it names (certificates, keys, CA
// files, ticket keys) without starting anything: `imapgate front --check`.
func Check(path string, log *slog.Logger) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	_, err = cfg.Options(log)
	return err
}

// Run is `imapgate front`: it serves the front described by the config file at path
// until ctx ends, then drains (timeouts.drain) and returns. Every value received on
// reload re-reads the file and swaps in the new settings for new connections; a broken
// file is logged and the running settings stay.
func Run(ctx context.Context, path string, reload <-chan struct{}, log *slog.Logger) error {
	return RunConfig(ctx, func() (*Config, error) { return LoadConfig(path) }, reload, log)
}

// RunConfig is Run with the configuration from load (called at start and on every
// reload), for commands that embed the front, such as `imapgate serve`.
func RunConfig(ctx context.Context, load func() (*Config, error), reload <-chan struct{}, log *slog.Logger) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	opts, err := cfg.Options(log)
	if err != nil {
		return err
	}
	// First CRL load before accepting anyone: without it every handshake is refused.
	for _, st := range opts.CRLs {
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if _, err := st.Refresh(lctx); err != nil {
			log.Error("initial CRL load failed; refusing client certificates until it succeeds", "error", err.Error())
		}
		cancel()
	}
	srv, err := New(opts, nil)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	// The CRL pollers run under their own context so a reload can replace them.
	crlCtx, stopCRLs := context.WithCancel(runCtx)
	defer func() { stopCRLs() }()
	for _, st := range opts.CRLs {
		go st.Run(crlCtx)
	}

	errc := make(chan error, 8)
	lns := map[Mode]net.Listener{}
	serve := func(ln net.Listener, mode Mode) {
		log.Info("front listening", "addr", ln.Addr().String(), "starttls", mode == StartTLS)
		lns[mode] = ln
		go func() { errc <- srv.Serve(runCtx, ln, mode) }()
	}
	var metricsSrv *http.Server
	serveMetrics := func(ln net.Listener) {
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.Metrics().Handler())
		// Idle and slow connections are closed: the listener shares the
		// process (and its file descriptors) with the front.
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
		log.Info("metrics listening", "addr", ln.Addr().String())
		go func(m *http.Server) {
			if err := m.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener failed", "error", err.Error())
			}
		}(metricsSrv)
	}
	fresh, err := openEndpoints(nil, cfg)
	if err != nil {
		srv.Close()
		return err
	}
	for mode, ln := range fresh.lns {
		serve(ln, mode)
	}
	if fresh.metrics != nil {
		serveMetrics(fresh.metrics)
	}

	for {
		select {
		case <-ctx.Done():
			log.Info("front shutting down; draining sessions")
			if metricsSrv != nil {
				metricsSrv.Close()
			}
			dctx, cancel := context.WithTimeout(context.Background(), srv.st.Load().opts.DrainTimeout+10*time.Second)
			srv.Shutdown(dctx)
			cancel()
			stop()
			return nil
		case err := <-errc:
			if err != nil {
				srv.Close()
				return err
			}
		case <-reload:
			next, err := load()
			if err == nil {
				var o Options
				var eps *endpoints
				if o, err = next.Options(log); err == nil {
					// New addresses are bound before anything changes, so one that
					// cannot be had fails the reload and the front keeps serving.
					eps, err = openEndpoints(cfg, next)
				}
				if err == nil {
					sameCRLs := reflect.DeepEqual(next.CRL, cfg.CRL)
					if sameCRLs {
						o.CRLs = opts.CRLs // keep the running, polled stores
					} else {
						err = loadCRLs(ctx, o.CRLs)
					}
					if err == nil {
						err = srv.Reload(o)
					}
					if err == nil && !sameCRLs {
						// New sources are live: start them, stop the old ones, and end
						// sessions whose CA lost its CRL source (fail closed).
						newCtx, cancel := context.WithCancel(runCtx)
						for _, st := range o.CRLs {
							go st.Run(newCtx)
						}
						stopCRLs()
						stopCRLs = cancel
						srv.registry.orphans(o.CRLs)
						// The new sources were loaded before anyone subscribed: apply
						// them to the live sessions now.
						for _, st := range o.CRLs {
							if snap := st.Load(); snap != nil {
								srv.registry.revoke(st, snap, log)
							}
						}
						log.Info("CRL sources replaced", "sources", len(o.CRLs))
					}
					if err == nil {
						// Listeners that moved: serve the new, close the old (its
						// sessions go on); a removed STARTTLS listener just closes.
						for _, mode := range []Mode{ImplicitTLS, StartTLS} {
							if ln := eps.lns[mode]; ln != nil {
								if old := lns[mode]; old != nil {
									old.Close()
								}
								serve(ln, mode)
							} else if mode == StartTLS && next.StartTLSListen == "" && lns[mode] != nil {
								lns[mode].Close()
								delete(lns, mode)
							}
						}
						if next.MetricsListen != cfg.MetricsListen {
							if metricsSrv != nil {
								metricsSrv.Close()
								metricsSrv = nil
							}
							if eps.metrics != nil {
								serveMetrics(eps.metrics)
							}
						}
						cfg, opts = next, o
					} else {
						eps.close()
					}
				}
			}
			if err != nil {
				log.Error("reload failed; keeping the running configuration", "error", err.Error())
			}
		}
	}
}
