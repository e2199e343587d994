package enrollui

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/pkcs11"
	"github.com/imapgate/imapgate/secretfile"
)

// Server is the UI: configuration, the PKCS#11 module, the CA clients and the
// web handlers. Build it with New, serve it with Serve or Run, end it with Close.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	auditLog *slog.Logger
	auditF   io.Closer

	mod          *pkcs11.Module
	agent, admin *caclient.Client
	agentCert    credInfo
	roots        []*x509.Certificate // the CA's roots, written onto tokens with the chain
	adminCert    credInfo
	tlsCert      *tls.Certificate // the UI's HTTPS pair, when tls_cert is set

	accessToken string // empty when operators log in with passwords
	sessions    *sessions
	throttle    *loginThrottle
	tokens      *tokenWatch
	jobs        *jobs
	busy        busyTokens
	left        leftKeys // keys failed enrollments left, to remove when the token is back
	tmpl        templates
	engine      *gin.Engine

	mu    sync.Mutex
	bound string // the listener's address once serving
	bg    sync.WaitGroup
}

// Options are what the caller wires in besides the config.
type Options struct {
	// Log receives the process log (default slog.Default()).
	Log *slog.Logger
	// AccessToken fixes the start-up access token (tests); default random.
	AccessToken string
}

// New validates cfg, opens the PKCS#11 module and the CA credentials, and
// builds the handlers. It does not listen yet.
func New(cfg *Config, o Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: o.Log, sessions: newSessions(cfg.SessionTTL.D()), throttle: newLoginThrottle(), jobs: newJobs()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.auditLog = s.log
	if cfg.TLS() {
		// The key is read like every other key: refused when others can read it.
		if err := secretfile.Check(cfg.TLSKey, "enroll-ui: tls_key"); err != nil {
			return nil, err
		}
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("enroll-ui: tls_cert/tls_key: %w", err)
		}
		s.tlsCert = &cert
	}
	if cfg.AuditLog != "" {
		f, err := os.OpenFile(cfg.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("enroll-ui: audit_log: %w", err)
		}
		s.auditF = f
		s.auditLog = slog.New(slog.NewJSONHandler(f, nil))
	}
	var err error
	if s.agent, err = s.caClient(cfg.AgentCred); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("enroll-ui: agent_cred: %w", err)
	}
	if s.agentCert, err = readCred(cfg.AgentCred); err != nil {
		s.closeFiles()
		return nil, err
	}
	if s.roots, err = readRoots(cfg.AgentCred); err != nil {
		s.closeFiles()
		return nil, err
	}
	if cfg.AdminCred != "" {
		if s.admin, err = s.caClient(cfg.AdminCred); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("enroll-ui: admin_cred: %w", err)
		}
		if s.adminCert, err = readCred(cfg.AdminCred); err != nil {
			s.closeFiles()
			return nil, err
		}
	}
	if len(cfg.Operators) == 0 {
		s.accessToken = o.AccessToken
		if s.accessToken == "" {
			s.accessToken = randomToken(24)
		}
	}
	if s.tmpl, err = parseTemplates(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if s.mod, err = pkcs11.Open(cfg.Module); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("enroll-ui: %w", err)
	}
	s.tokens = newTokenWatch(s.mod, cfg.ScanInterval.D(), &s.busy, &s.left, s.log)
	s.engine = s.routes()
	return s, nil
}

// Check validates the config and everything a start would open, then
// releases it (imapgate enroll-ui --check).
func Check(cfg *Config, log *slog.Logger) error {
	s, err := New(cfg, Options{Log: log})
	if err != nil {
		return err
	}
	return s.Close()
}

func (s *Server) closeFiles() {
	if s.auditF != nil {
		s.auditF.Close()
	}
}

// Close waits for running enrollments and audit records, then releases the
// module.
func (s *Server) Close() error {
	s.tokens.stop()
	s.jobs.wait()
	s.bg.Wait()
	s.closeFiles()
	return s.mod.Close()
}

// Handler is the whole UI, for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s.engine }

// addr is the address the UI answers as.
func (s *Server) addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound != "" {
		return s.bound
	}
	return s.cfg.Listen
}

func (s *Server) origin() string {
	scheme := "http"
	if s.cfg.TLS() {
		scheme = "https"
	}
	return scheme + "://" + s.addr()
}

// LoginURL is the link printed at start-up (with the access token), or the
// login page when operators log in with passwords.
func (s *Server) LoginURL() string {
	if s.accessToken == "" {
		return s.origin() + "/login"
	}
	return s.origin() + "/login?token=" + s.accessToken
}

// Run listens on the configured address and serves until ctx ends.
func (s *Server) Run(ctx context.Context, out io.Writer) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("enroll-ui: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln, out)
}

// Serve serves on ln until ctx ends; the login link is written to out.
func (s *Server) Serve(ctx context.Context, ln net.Listener, out io.Writer) error {
	s.mu.Lock()
	s.bound = ln.Addr().String()
	if _, port, _ := net.SplitHostPort(s.cfg.Listen); port != "0" {
		s.bound = s.cfg.Listen // the name the operator configured, e.g. localhost:8088
	}
	s.mu.Unlock()
	if !s.cfg.Loopback() {
		s.log.Warn("enroll-ui: listening on a non-loopback address: anyone who can reach it and knows the access token or an operator password can enroll and revoke; prefer 127.0.0.1", "listen", s.cfg.Listen)
	}
	srv := &http.Server{Handler: s.engine, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if s.cfg.TLS() {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*s.tlsCert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go s.tokens.run()
	if s.accessToken != "" && s.cfg.LinkFile != "" {
		if err := writeLinkFile(s.cfg.LinkFile, s.LoginURL()); err != nil {
			return err
		}
		// The token dies with the process; so does the file.
		defer os.Remove(s.cfg.LinkFile)
	}
	if out != nil {
		fmt.Fprintf(out, "imapgate enroll-ui: open %s\n", s.LoginURL())
	}
	s.log.Info("enroll-ui: serving", "address", s.addr(), "tls", s.cfg.TLS(), "admin", s.admin != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// routes wires the pages. Middleware order: recover, log, headers, Host,
// body limit, session, CSRF, then login for everything but /login and /static.
func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	// No proxy is trusted: X-Forwarded-For and X-Real-IP are whatever the
	// sender typed, and the remote address logged is the connection's.
	_ = e.SetTrustedProxies(nil)
	e.ForwardedByClientIP = false
	e.HandleMethodNotAllowed = true
	e.RedirectTrailingSlash = false
	e.Use(s.recovery, s.accessLog, s.headers, s.hostCheck, s.limitBody, s.withSession, s.csrfCheck)
	e.NoRoute(func(c *gin.Context) {
		s.renderStatus(c, http.StatusNotFound, "error", page{Title: "Not found", Error: "There is no such page. Use the menu above."})
	})
	e.GET("/static/*file", s.static)
	e.GET("/login", s.loginPage)
	e.POST("/login", s.loginPost)

	a := e.Group("/", s.requireLogin)
	a.POST("/logout", s.logout)
	a.GET("/", s.tokensPage)
	a.GET("/tokens/fragment", s.tokensFragment)
	a.GET("/tokens/leftover", s.leftoverPage)
	a.POST("/tokens/leftover", s.leftoverRemove)
	a.GET("/enroll", s.enrollPick)
	a.POST("/enroll/user", s.enrollUser)
	a.POST("/enroll/start", s.enrollStart)
	a.GET("/enroll/job/:id", s.enrollJob)
	a.GET("/enroll/job/:id/fragment", s.enrollJobFragment)
	a.GET("/pin", s.pinPage)
	a.POST("/pin/change", s.pinChange)
	a.POST("/pin/unblock", s.pinUnblock)
	a.GET("/certs", s.certsPage)
	a.GET("/certs/:serial", s.certPage)
	a.GET("/status", s.statusPage)
	r := a.Group("/revoke", s.requireAdmin)
	r.GET("", s.revokePage)
	r.POST("", s.revokeConfirm)
	r.POST("/do", s.revokeDo)
	return e
}

// caClient is a CA client for a credential, connecting to ca_address when
// it is set.
func (s *Server) caClient(cred string) (*caclient.Client, error) {
	cl, err := caclient.New(s.cfg.CAURL, cred)
	if err != nil {
		return nil, err
	}
	cl.DialAddress(s.cfg.CAAddress)
	return cl, nil
}

// writeLinkFile writes the access link into path, readable by its owner only.
func writeLinkFile(path, link string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		err = f.Chmod(0o600) // a file left by an older start keeps its mode otherwise
		if _, werr := f.WriteString(link + "\n"); err == nil {
			err = werr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("enroll-ui: link_file: %w", err)
	}
	return nil
}
