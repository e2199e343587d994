package testenv

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
)

// CA is a real imapgate CA served over HTTPS on 127.0.0.1, with its public
// paths also on plain HTTP (the URL in its certificates' CRL distribution point).
type CA struct {
	// URL is the HTTPS API, PublicURL the plain-HTTP base (PublicURL+"/crl").
	URL, PublicURL string
	// Dir is the CA directory; AdminCred and EnrollCred are credential directories.
	Dir, AdminCred, EnrollCred string
	// RootsPEM is the path of the root certificate (PEM).
	RootsPEM string
	// Root and Intermediate are the CA certificates.
	Root, Intermediate *x509.Certificate
	// CA is the open authority, for assertions that look inside.
	CA *ca.CA
	// Password is the key password (test value).
	Password string

	stop func()
}

// CAOptions change StartCA.
type CAOptions struct {
	// Dir is where the CA lives; default a new t.TempDir(). A Dir that already
	// holds a CA is reopened (restart tests).
	Dir string
	// DB selects the database (default bbolt in Dir).
	DB *ca.DBConfig
	// Configure edits the config before the CA is opened.
	Configure func(*ca.Config)
	// Log receives the CA's log; default discards.
	Log io.Writer
	// Node starts another node of an existing CA (Dir holds a copy of it) on
	// fresh ports; the URLs in its certificates and CRL stay those of the CA,
	// as behind a load balancer. PublicURL is then this node's own address.
	Node bool
	// KMS makes a new CA keep its intermediate key in this PKCS#11 KMS URI.
	KMS string
}

// StartCA creates (or reopens) a CA and serves it until the test ends.
func StartCA(t testing.TB, opts ...CAOptions) *CA {
	t.Helper()
	var o CAOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "ca")
	}
	c := &CA{Dir: o.Dir, Password: "test-password-not-secret"}
	pwFile := filepath.Join(filepath.Dir(o.Dir), "ca-password")
	if err := os.WriteFile(pwFile, []byte(c.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	apiLn := listen(t)
	pubLn := listen(t)
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := slog.New(slog.NewJSONHandler(logw, nil))
	if _, err := os.Stat(filepath.Join(o.Dir, ca.ConfigFile)); err != nil {
		_, err := ca.Init(context.Background(), ca.InitOptions{Log: logger,
			Dir: o.Dir, Name: "imapgate test", PasswordFile: pwFile, DB: o.DB, KMS: o.KMS,
			URL:       "https://" + apiLn.Addr().String(),
			PublicURL: "http://" + pubLn.Addr().String(),
		})
		if err != nil {
			t.Fatalf("testenv: ca init: %v", err)
		}
	}
	cfg, err := ca.LoadConfig(o.Dir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	nodePublic := ""
	switch {
	case o.Node:
		cfg.URL, cfg.Listen = "https://"+apiLn.Addr().String(), ""
		nodePublic = "http://" + pubLn.Addr().String()
	case cfg.URL != "https://"+apiLn.Addr().String():
		// A reopened CA keeps its URLs: listen on exactly those ports again.
		apiLn.Close()
		pubLn.Close()
		apiLn = listenOn(t, hostPort(t, cfg.URL))
		pubLn = listenOn(t, hostPort(t, cfg.PublicURL))
	}
	cfg.Keys.PasswordFile = pwFile
	if o.Configure != nil {
		o.Configure(cfg)
	}
	authority, err := ca.Open(context.Background(), cfg, ca.WithLogger(logger))
	if err != nil {
		t.Fatalf("testenv: ca open: %v", err)
	}
	c.CA, c.Root, c.Intermediate = authority, authority.Root(), authority.Intermediate()
	c.URL, c.PublicURL = cfg.URL, cfg.PublicURL
	if nodePublic != "" {
		c.PublicURL = nodePublic
	}
	c.AdminCred = filepath.Join(o.Dir, ca.AdminDir)
	c.RootsPEM = filepath.Join(o.Dir, ca.RootCertFile)
	c.EnrollCred = filepath.Join(o.Dir, "enroll-cred")
	if _, err := os.Stat(c.EnrollCred); err != nil {
		if _, err := authority.IssueCredential(context.Background(), ca.RoleEnroll, "test help desk", c.EnrollCred,
			ca.Requester{Subject: "testenv"}); err != nil {
			t.Fatalf("testenv: enroll credential: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ca.NewServer(authority).Serve(ctx, apiLn, pubLn) }()
	c.stop = func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("testenv: CA server: %v", err)
		}
		authority.Close()
	}
	t.Cleanup(c.Stop)
	waitHTTP(t, c.PublicURL+"/healthz")
	return c
}

// Stop stops the CA now (it is also stopped when the test ends). Safe to call twice.
func (c *CA) Stop() {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
}

func listen(t testing.TB) net.Listener { return listenOn(t, "127.0.0.1:0") }

func listenOn(t testing.TB, addr string) net.Listener {
	t.Helper()
	var err error
	for i := 0; i < 50; i++ { // a port just released may linger briefly
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("testenv: listen %s: %v", addr, err)
	return nil
}

func hostPort(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return u.Host
}

func waitHTTP(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(addr)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s not ready: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
