package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// state is the immutable snapshot built from Options.
type state struct {
	opts          Options
	tls           *tls.Config
	intermediates *x509.CertPool

	chains     sync.Map // [32]byte → *chainResult: verified chains, see verifyChain
	chainCount atomic.Int64

	ticketConfigs sync.Pool // *ticketConfig: handshakes' TLS configurations (sessionTLS)
}

// buildState validates o (every problem at once), fills in the defaults and builds
// the snapshot a Server runs on.
func buildState(o Options) (*state, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	backendTLS, err := backendTLSConfig(&o.Backend)
	if err != nil {
		return nil, err // validate ran the same check: cannot happen
	}
	o.Backend.TLSConfig = backendTLS
	for _, b := range []*BackendOptions{&o.POP3.Backend, &o.SMTP.Backend} {
		if b.Address != "" {
			if b.TLSConfig, err = backendTLSConfig(b); err != nil {
				return nil, err
			}
		}
	}
	o.setDefaults()
	inter := x509.NewCertPool()
	for _, c := range o.ClientIntermediates {
		inter.AddCert(c)
	}
	// Each CRL's issuer issues user certificates: a client that sends its leaf alone
	// gets its chain built through them without the admin configuring them twice.
	for _, s := range o.CRLs {
		inter.AddCert(s.Issuer())
	}
	st := &state{opts: o, tls: newTLSConfig(&o, acceptableCAs(&o)), intermediates: inter}
	st.ticketConfigs.New = func() any { return st.newTicketConfig() }
	return st, nil
}

// Server is a running front.
type Server struct {
	st       atomic.Pointer[state]
	log      *slog.Logger
	metrics  *Metrics
	registry *registry
	conns    *connLimiter
	throttle *throttle

	sessions sync.WaitGroup
	accepted atomic.Uint64 // connections accepted so far (memory.go)
	mu       sync.Mutex
	lns      []net.Listener
	subbed   map[*crl.Store]bool
	closed   atomic.Bool
}

// New validates o (all errors at once) and builds a Server. Nothing listens yet.
func New(o Options, m *Metrics) (*Server, error) {
	st, err := buildState(o)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics()
	}
	s := &Server{
		log:      st.opts.Logger,
		metrics:  m,
		registry: newRegistry(),
		conns:    newConnLimiter(),
		throttle: newThrottle(),
		subbed:   map[*crl.Store]bool{},
	}
	s.st.Store(st)
	s.subscribe(st)
	m.observeServer(s)
	return s, nil
}

// track registers a new session in the live-session registry; false once shutdown
// has begun. Only the Server touches the registry.
func (s *Server) track(sess *session) bool { return s.registry.add(sess) }

// untrack removes an ended session from the registry.
func (s *Server) untrack(sess *session) { s.registry.remove(sess) }

// subscribe hooks the live-session registry to every CRL store of st.
func (s *Server) subscribe(st *state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, store := range st.opts.CRLs {
		if s.subbed[store] {
			continue
		}
		s.subbed[store] = true
		store.Subscribe(func(snap *crl.Snapshot) { s.registry.revoke(store, snap, s.log) })
		store.OnStale(func(err error) { s.crlStale(store, err) })
	}
}

// crlStale ends the live sessions of store's CA: its CRL went stale, so their
// certificates can no longer be known not to be revoked — the same reason new
// handshakes are refused. A store that a reload has replaced speaks for nobody.
func (s *Server) crlStale(store *crl.Store, err error) {
	if s.st.Load().crlFor(store.Issuer()) != store {
		return
	}
	s.registry.stale(store.Issuer(), err)
}

// Reload validates o and swaps it in for new connections; live sessions keep theirs,
// except that when o brings other CRL stores, the sessions whose CA has none there any
// more end, and the new stores' CRLs are applied to the live sessions.
func (s *Server) Reload(o Options) error {
	st, err := buildState(o)
	if err != nil {
		return err
	}
	prev := s.st.Swap(st)
	s.subscribe(st)
	if !sameStores(prev.opts.CRLs, st.opts.CRLs) {
		// End the sessions whose CA lost its CRL source (fail closed), and apply the
		// new sources, loaded before anyone subscribed, to the live sessions.
		s.registry.orphans(st.opts.CRLs)
		for _, store := range st.opts.CRLs {
			if snap := store.Load(); snap != nil {
				s.registry.revoke(store, snap, s.log)
			}
		}
	}
	s.log.Info("front reloaded")
	return nil
}

// sameStores: a and b hold the same CRL stores in the same order.
func sameStores(a, b []*crl.Store) bool {
	return slices.Equal(a, b)
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Mode is how a listener starts its connections.
type Mode int

// Listener modes.
const (
	// ImplicitTLS is IMAPS (port 993): TLS from the first byte.
	ImplicitTLS Mode = iota
	// StartTLS is IMAP (port 143): a plain greeting, then STARTTLS before anything else.
	StartTLS
)

// Serve accepts IMAP connections on ln until ctx ends or Close is called. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener, mode Mode) error {
	return s.serve(ctx, ln, mode, imap{})
}

// ServePOP3 is Serve for POP3 (implicit TLS on 995, STLS on 110), with the backend
// of Options.POP3.
func (s *Server) ServePOP3(ctx context.Context, ln net.Listener, mode Mode) error {
	return s.serve(ctx, ln, mode, pop3{})
}

func (s *Server) serve(ctx context.Context, ln net.Listener, mode Mode, proto protocol) error {
	// Always wrapped: with no trusted networks the policy skips every connection
	// (no byte is read as a header), and a reload can add some later.
	st := s.st.Load()
	ln = newProxyListener(ln, func() []netip.Prefix { return s.st.Load().opts.TrustedProxies }, st.opts.HandshakeTimeout, s.log)
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if isTemporary(err) {
				// Out of file descriptors and the like: back off rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", "error", err.Error(), "backoff", backoff.String())
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("mtls: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		s.accepted.Add(1)
		s.sessions.Add(1)
		go func() {
			defer s.sessions.Done()
			s.handle(ctx, c, mode, proto)
		}()
	}
}

func isTemporary(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

// Shutdown stops accepting, lets live sessions run for up to the drain timeout (or until
// ctx ends), then ends the rest with "* BYE" and waits for them.
func (s *Server) Shutdown(ctx context.Context) {
	s.closeListeners()
	drain := s.st.Load().opts.DrainTimeout
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	t := time.NewTimer(drain)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	case <-ctx.Done():
	}
	s.registry.shutdown(byeShutdown)
	<-done
}

// Close stops accepting and ends every session at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.registry.shutdown(byeShutdown)
	s.sessions.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed.Store(true)
	for _, ln := range s.lns {
		ln.Close()
	}
	s.lns = nil
}

// handle runs one connection from accept to close.
func (s *Server) handle(ctx context.Context, c net.Conn, mode Mode, proto protocol) {
	st := s.st.Load()
	remote := addrPort(c.RemoteAddr())
	release, why := s.conns.acquire(remote.Addr(), &st.opts.Limits, time.Now())
	if why != "" {
		s.metrics.handshake("limited").Inc()
		st.opts.Logger.Warn("connection refused", "remote_ip", remote.Addr().String(), "result", "limited", "reason", why)
		c.Close()
		return
	}
	defer release()
	if why := s.conns.enterPreAuth(&st.opts.Limits); why != "" {
		s.metrics.handshake("limited").Inc()
		st.opts.Logger.Warn("connection refused", "remote_ip", remote.Addr().String(), "result", "limited", "reason", why)
		c.Close()
		return
	}
	sess := newSession(s, st, c, proto)
	sess.preauth = true
	defer sess.leavePreAuth()
	s.metrics.active.Inc()
	defer s.metrics.active.Dec()
	sess.run(ctx, mode)
}

func addrPort(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort()
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		return ap
	}
}
