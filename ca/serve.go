package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// listeners are the servers running now, replaced one by one on reload.
type listeners struct {
	mu       sync.Mutex
	api, pub *http.Server
	// apiAddr and pubAddr are the configured addresses they serve (pubAddr
	// "" when there is no plain-HTTP listener).
	apiAddr, pubAddr string
	errc             chan error
	tcfg             *tls.Config
	// old are servers being shut down after a reload.
	old sync.WaitGroup
}

func (s *Server) newHTTPServer(h http.Handler, tcfg *tls.Config) *http.Server {
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	srv := &http.Server{Handler: h, TLSConfig: tcfg, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	return srv
}

// startAPI serves the HTTPS API on ln; startPublic the public paths on ln.
func (s *Server) startAPI(ln net.Listener) *http.Server {
	srv := s.newHTTPServer(s.Handler(), s.lns.tcfg)
	errc := s.lns.errc
	go func() { errc <- srv.Serve(tls.NewListener(ln, s.lns.tcfg)) }()
	return srv
}

func (s *Server) startPublic(ln net.Listener) *http.Server {
	srv := s.newHTTPServer(s.PublicHandler(), nil)
	errc := s.lns.errc
	go func() { errc <- srv.Serve(ln) }()
	return srv
}

// retire shuts an old server down gracefully in the background.
func (s *Server) retire(srv *http.Server) {
	if srv == nil {
		return
	}
	s.lns.old.Add(1)
	go func() {
		defer s.lns.old.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}()
}

// Serve runs the HTTPS API on ln (and the plain public listener on pub, if not
// nil) until ctx ends, then shuts both down gracefully. Reload may move them
// to other addresses meanwhile.
func (s *Server) Serve(ctx context.Context, ln net.Listener, pub net.Listener) error {
	tcfg, err := s.TLSConfig()
	if err != nil {
		return err
	}
	s.lns.mu.Lock()
	s.lns.errc, s.lns.tcfg = make(chan error, 16), tcfg
	s.lns.api, s.lns.apiAddr = s.startAPI(ln), s.ca.cfg.ListenAddr()
	if pub != nil {
		s.lns.pub, s.lns.pubAddr = s.startPublic(pub), s.ca.cfg.HTTPListen
	}
	errc := s.lns.errc
	s.lns.mu.Unlock()
	var serveErr error
	for serveErr == nil {
		select {
		case <-ctx.Done():
			serveErr = ctx.Err()
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				serveErr = fmt.Errorf("ca: serve: %w", err)
			}
		}
	}
	s.lns.mu.Lock()
	api, psrv := s.lns.api, s.lns.pub
	s.lns.api, s.lns.pub = nil, nil
	s.lns.mu.Unlock()
	if ctx.Err() == nil { // a listener failed
		api.Close()
		if psrv != nil {
			psrv.Close()
		}
		s.lns.old.Wait()
		return serveErr
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = api.Shutdown(sctx)
	if psrv != nil {
		psrv.Shutdown(sctx)
	}
	s.lns.old.Wait()
	return err
}
