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

// loadCRLs loads every new CRL source once; a reload that cannot is refused, so
// the front never swaps in a source that would refuse every client.
func loadCRLs(ctx context.Context, stores []*crl.Store) error {
	for _, st := range stores {
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := st.Refresh(lctx)
		cancel()
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

	errc := make(chan error, 3)
	serve := func(addr string, mode Mode) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("front: listen on %s: %w (is another server on that port?)", addr, err)
		}
		log.Info("front listening", "addr", ln.Addr().String(), "starttls", mode == StartTLS)
		go func() { errc <- srv.Serve(runCtx, ln, mode) }()
		return nil
	}
	if err := serve(cfg.Listen, ImplicitTLS); err != nil {
		return err
	}
	if cfg.StartTLSListen != "" {
		if err := serve(cfg.StartTLSListen, StartTLS); err != nil {
			srv.Close()
			return err
		}
	}
	var metricsSrv *http.Server
	if cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.Metrics().Handler())
		metricsSrv = &http.Server{Addr: cfg.MetricsListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			srv.Close()
			return fmt.Errorf("front: metrics listener on %s: %w", cfg.MetricsListen, err)
		}
		log.Info("metrics listening", "addr", ln.Addr().String())
		go func() {
			if err := metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener failed", "error", err.Error())
			}
		}()
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
				if o, err = next.Options(log); err == nil {
					if !reflect.DeepEqual(next.ProxyProtocol, cfg.ProxyProtocol) ||
						next.Listen != cfg.Listen || next.StartTLSListen != cfg.StartTLSListen || next.MetricsListen != cfg.MetricsListen {
						log.Warn("proxy_protocol and listen settings are read at start only; restart the front to change them")
					}
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
						cfg, opts = next, o
					}
				}
			}
			if err != nil {
				log.Error("reload failed; keeping the running configuration", "error", err.Error())
			}
		}
	}
}
