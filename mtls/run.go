package mtls

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"
)

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
	if err := cfg.prepareStateDir(); err != nil {
		return err
	}
	opts, err := cfg.Options(log)
	if err != nil {
		return err
	}
	warnFrontCert(&opts, "start")
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
	go logBackendProbes(ctx, &srv.st.Load().opts, log)
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	quiet := time.NewTicker(quietAfter)
	defer quiet.Stop()
	go returnIdleMemory(runCtx, srv.accepted.Load, quiet.C, debug.FreeOSMemory)
	headroom := time.NewTicker(time.Second)
	defer headroom.Stop()
	go keepGCHeadroom(runCtx, os.Getenv, headroom.C, liveHeap)
	r := &runner{ctx: ctx, runCtx: runCtx, srv: srv, log: log, cfg: cfg, opts: opts,
		errc: make(chan error, 8), lns: map[Mode]net.Listener{}}
	// The CRL pollers run under their own context so a reload can replace them.
	r.startCRLs()
	defer func() { r.stopCRLs() }()
	fresh, err := openEndpoints(nil, cfg)
	if err != nil {
		srv.Close()
		return err
	}
	pfresh, err := openPOP3(nil, cfg)
	if err != nil {
		fresh.close()
		srv.Close()
		return err
	}
	sfresh, err := openSMTP(nil, cfg)
	if err != nil {
		fresh.close()
		pfresh.close()
		srv.Close()
		return err
	}
	r.use(fresh, cfg)
	r.usePOP3(pfresh, cfg)
	r.useSMTP(sfresh, cfg)

	for {
		select {
		case <-ctx.Done():
			log.Info("front shutting down; draining sessions")
			if r.metricsSrv != nil {
				r.metricsSrv.Close()
			}
			dctx, cancel := context.WithTimeout(context.Background(), srv.st.Load().opts.DrainTimeout+10*time.Second)
			srv.Shutdown(dctx)
			cancel()
			stop()
			return nil
		case err := <-r.errc:
			if err != nil {
				srv.Close()
				return err
			}
		case <-reload:
			next, err := load()
			if err == nil {
				err = r.apply(next)
			}
			if err != nil {
				log.Error("reload failed; keeping the running configuration", "error", err.Error())
			}
		}
	}
}

// serve starts serving ln in mode; its end is reported on r.errc.
func (r *runner) serve(ln net.Listener, mode Mode) {
	r.log.Info("front listening", "addr", ln.Addr().String(), "starttls", mode == StartTLS)
	r.lns[mode] = ln
	go func() { r.errc <- r.srv.Serve(r.runCtx, ln, mode) }()
}

// serveMetrics starts the metrics endpoint on ln.
func (r *runner) serveMetrics(ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.srv.Metrics().Handler())
	// Idle and slow connections are closed: the listener shares the
	// process (and its file descriptors) with the front.
	m := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	r.metricsSrv = m
	r.log.Info("metrics listening", "addr", ln.Addr().String())
	go func() {
		if err := m.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("metrics listener failed", "error", err.Error())
		}
	}()
}
