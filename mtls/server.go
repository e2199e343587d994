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
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// Options is everything a front needs, already loaded (certificates parsed, CRL stores
// built). Config.Options builds one from the YAML file; tests build one directly.
type Options struct {
	// Certificates are the front's own server certificates.
	Certificates []tls.Certificate
	// ClientRoots are the CA roots client certificates must chain to.
	ClientRoots *x509.CertPool
	// ClientIntermediates help build chains for clients that send only their leaf.
	ClientIntermediates *x509.CertPool
	// CRLs hold one store per issuing CA. A client certificate whose issuer has no
	// store here is refused: revocation status unknown means no.
	CRLs []*crl.Store

	// Backend is the IMAP server behind the front.
	Backend BackendOptions

	// Identity binds the login name to the certificate; nil is IdentityEmail.
	Identity *IdentityPolicy

	// HandshakeTimeout bounds the TLS handshake; default 10s.
	HandshakeTimeout time.Duration
	// PreAuthTimeout bounds the wait for each pre-auth command; default 60s.
	PreAuthTimeout time.Duration
	// MaxBadCommands before the front says BYE; default 5.
	MaxBadCommands int
	// DrainTimeout is how long Shutdown lets sessions run on; default 30s.
	DrainTimeout time.Duration

	Limits   Limits
	Throttle Throttle

	// SessionTicketKeys, when set, are shared by all fronts so tickets resume on any.
	SessionTicketKeys [][32]byte
	// DisableSessionTickets turns resumption off.
	DisableSessionTickets bool

	// TrustedProxies may send a PROXY protocol v2 header; others may not.
	TrustedProxies []netip.Prefix

	// Logger gets one JSON line per decision; default slog.Default().
	Logger *slog.Logger
}

// BackendOptions say where and how to log in to the IMAP server.
type BackendOptions struct {
	// Address is host:port of the IMAP server.
	Address string
	// TLS is how the connection to it is protected: BackendPlain (the default; plain
	// TCP on a trusted network), BackendImplicitTLS or BackendStartTLS.
	TLS BackendTLS
	// TLSConfig verifies the backend when TLS is on: RootCAs (nil: the system roots),
	// ServerName (empty: the host of Address) and, optionally, the front's own client
	// Certificates. MinVersion is raised to TLS 1.2. Verification cannot be turned off.
	TLSConfig *tls.Config
	// DialTimeout bounds the TCP connect, the TLS handshake and the greeting; default 5s.
	DialTimeout time.Duration
	// LoginTimeout bounds ID and LOGIN; default 15s.
	LoginTimeout time.Duration
}

// BackendTLS is how the front protects its connection to the backend.
type BackendTLS string

// Backend TLS modes, spelled as in the config file (backend.tls).
const (
	BackendPlain       BackendTLS = "none"     // plain TCP
	BackendImplicitTLS BackendTLS = "implicit" // TLS from the first byte (imaps, port 993)
	BackendStartTLS    BackendTLS = "starttls" // plain IMAP, then STARTTLS before anything else
)

// backendTLSConfig completes the backend's client TLS config: TLS 1.2 or later, the
// server name from the address, a session cache so that logins resume TLS sessions.
func backendTLSConfig(b *BackendOptions) (*tls.Config, error) {
	switch b.TLS {
	case "", BackendPlain:
		if b.TLSConfig != nil {
			return nil, errors.New("mtls: backend TLS settings are set but backend.tls is none: set backend.tls to implicit or starttls, or drop them")
		}
		b.TLS = BackendPlain
		return nil, nil
	case BackendImplicitTLS, BackendStartTLS:
	default:
		return nil, fmt.Errorf("mtls: backend.tls %q: want none, implicit or starttls", b.TLS)
	}
	var cfg *tls.Config
	if b.TLSConfig != nil {
		if b.TLSConfig.InsecureSkipVerify {
			return nil, errors.New("mtls: backend TLS without certificate verification is not supported: give the backend's CA in backend.ca_file")
		}
		cfg = b.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(b.Address)
		if err != nil {
			return nil, fmt.Errorf("mtls: backend.address %q: %w", b.Address, err)
		}
		cfg.ServerName = host
	}
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	return cfg, nil
}

// state is the immutable snapshot built from Options.
type state struct {
	opts          Options
	tls           *tls.Config
	intermediates *x509.CertPool

	chains     sync.Map // [32]byte → *chainResult: verified chains, see verifyChain
	chainCount atomic.Int64
}

func buildState(o Options) (*state, error) {
	var errs []error
	if len(o.Certificates) == 0 {
		errs = append(errs, errors.New("mtls: no server certificate: set tls.cert_file and tls.key_file"))
	}
	if o.ClientRoots == nil {
		errs = append(errs, errors.New("mtls: no client CA: set tls.client_ca_file to the CA root(s) that issue user certificates"))
	}
	if len(o.CRLs) == 0 {
		errs = append(errs, errors.New("mtls: no CRL source: set crl (url or file, and issuer_file); the front refuses to run without revocation checks"))
	}
	if o.Backend.Address == "" {
		errs = append(errs, errors.New("mtls: no backend: set backend.address to the IMAP server's host:port"))
	} else if _, _, err := net.SplitHostPort(o.Backend.Address); err != nil {
		errs = append(errs, fmt.Errorf("mtls: backend.address %q: %w", o.Backend.Address, err))
	}
	backendTLS, err := backendTLSConfig(&o.Backend)
	if err != nil {
		errs = append(errs, err)
	}
	o.Backend.TLSConfig = backendTLS
	if err := o.Limits.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Throttle.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	setDefault(&o.HandshakeTimeout, 10*time.Second)
	setDefault(&o.PreAuthTimeout, 60*time.Second)
	setDefault(&o.DrainTimeout, 30*time.Second)
	setDefault(&o.Backend.DialTimeout, 5*time.Second)
	setDefault(&o.Backend.LoginTimeout, 15*time.Second)
	if o.MaxBadCommands <= 0 {
		o.MaxBadCommands = 5
	}
	o.Limits.setDefaults()
	o.Throttle.setDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	inter := x509.NewCertPool()
	if o.ClientIntermediates != nil {
		inter = o.ClientIntermediates.Clone()
	}
	// Each CRL's issuer issues user certificates. A smartcard often holds only the
	// user's certificate and NSS then sends the leaf alone: build the chain
	// through the CRL issuers without making the admin configure them twice.
	for _, s := range o.CRLs {
		inter.AddCert(s.Issuer())
	}
	return &state{opts: o, tls: newTLSConfig(&o), intermediates: inter}, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
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

// Reload validates o and swaps it in for new connections; live sessions keep theirs.
func (s *Server) Reload(o Options) error {
	st, err := buildState(o)
	if err != nil {
		return err
	}
	s.st.Store(st)
	s.subscribe(st)
	s.log.Info("front reloaded")
	return nil
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

// Serve accepts connections on ln until ctx ends or Close is called. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener, mode Mode) error {
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
		s.sessions.Add(1)
		go func() {
			defer s.sessions.Done()
			s.handle(ctx, c, mode)
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
	s.registry.shutdown(&Reply{Status: "BYE", Code: "UNAVAILABLE", Text: "This server is shutting down; your mail program will reconnect."})
	<-done
}

// Close stops accepting and ends every session at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.registry.shutdown(&Reply{Status: "BYE", Code: "UNAVAILABLE", Text: "This server is shutting down; your mail program will reconnect."})
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
func (s *Server) handle(ctx context.Context, c net.Conn, mode Mode) {
	st := s.st.Load()
	remote := addrPort(c.RemoteAddr())
	release, why := s.conns.acquire(remote.Addr(), &st.opts.Limits, time.Now())
	if why != "" {
		s.metrics.handshakes.WithLabelValues("limited").Inc()
		st.opts.Logger.Warn("connection refused", "remote_ip", remote.Addr().String(), "result", "limited", "reason", why)
		c.Close()
		return
	}
	defer release()
	sess := newSession(s, st, c)
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
