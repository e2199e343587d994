package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/db"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
)

// CA is an open certificate authority: the embedded smallstep authority, its
// database and imapgate's issuance records. It is safe for concurrent use.
type CA struct {
	cfg   *Config
	auth  *authority.Authority
	db    *db.DB
	root  *x509.Certificate
	inter *x509.Certificate
	// interKey signs the CA's own TLS certificate when it is renewed.
	interKey crypto.Signer
	km       apiv1.KeyManager
	log      *slog.Logger
	now      func() time.Time
	// crlStop ends the CRL schedule; crlDone is closed when it has.
	crlStop, crlDone chan struct{}
	// crlCache is the last CRL read from the database (see CRL).
	crlCache atomic.Pointer[CRL]
	// crlCfg is the CRL schedule in force; crlKick tells the schedule it changed.
	crlCfg  atomic.Pointer[CRLConfig]
	crlKick chan struct{}
	// auditIx lets a listing read only the entries it returns; nil on
	// PostgreSQL, where other nodes write the trail too (auditindex.go).
	auditIx *auditIndex
	// certIx lets a certificate search read only the records it returns;
	// nil on PostgreSQL, as auditIx.
	certIx *certIndex
	// auditScans shares the full reads of the trail where auditIx is nil.
	auditScans auditScans
}

// Option changes how Open builds the CA.
type Option func(*CA)

// WithLogger sets the logger for audit lines (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *CA) { c.log = l } }

// Open loads the CA's certificates and keys, opens its database and starts the
// embedded authority. It signs a fresh CRL right away and runs the CRL schedule
// (see runCRLSchedule).
func Open(ctx context.Context, cfg *Config, opts ...Option) (*CA, error) {
	c := &CA{cfg: cfg, log: slog.Default(), now: time.Now, crlKick: make(chan struct{}, 1)}
	crlCfg := cfg.CRL
	c.crlCfg.Store(&crlCfg)
	for _, o := range opts {
		o(c)
	}
	var err error
	if c.root, err = pemutil.ReadCertificate(cfg.path(RootCertFile)); err != nil {
		return nil, fmt.Errorf("ca: open: root certificate: %w", err)
	}
	if c.inter, err = pemutil.ReadCertificate(cfg.path(IntermediateCertFile)); err != nil {
		return nil, fmt.Errorf("ca: open: intermediate certificate: %w", err)
	}
	if c.interKey, c.km, err = loadIntermediateKey(ctx, cfg); err != nil {
		return nil, err
	}
	if err := checkKeyMatches(c.inter, c.interKey); err != nil {
		c.closeKMS()
		return nil, err
	}

	dbcfg := &db.Config{Type: cfg.DB.Type, DataSource: cfg.DB.DataSource, Database: cfg.DB.Database}
	if cfg.DB.Type == "bbolt" {
		dbcfg.DataSource = cfg.path(cfg.DB.DataSource)
	}
	adb, err := db.New(dbcfg)
	if err != nil {
		c.closeKMS()
		if cfg.DB.Type == "bbolt" && strings.Contains(err.Error(), "timeout") {
			return nil, fmt.Errorf("ca: open database %s: it is locked by another process (a bbolt CA runs as one process; use PostgreSQL for several nodes)", dbcfg.DataSource)
		}
		return nil, fmt.Errorf("ca: open %s database: %w", cfg.DB.Type, err)
	}
	c.db = adb.(*db.DB)
	if cfg.DB.Type == "bbolt" {
		// bbolt creates the file 0600 already; make sure an older file is too.
		_ = os.Chmod(dbcfg.DataSource, 0o600)
	}
	for _, t := range [][]byte{certsTable, auditTable, locksTable, crlMetaTable} {
		if err := c.db.CreateTable(t); err != nil {
			c.db.Shutdown()
			c.closeKMS()
			return nil, fmt.Errorf("ca: create table %s: %w", t, err)
		}
	}
	if cfg.DB.Type == "bbolt" {
		for _, build := range []func() error{c.buildAuditIndex, c.buildCertIndex} {
			if err := build(); err != nil {
				c.db.Shutdown()
				c.closeKMS()
				return nil, err
			}
		}
	}

	c.auth, err = authority.NewEmbedded(
		// No CRL config: smallstep's generator is not safe across nodes (crl.go).
		authority.WithConfig(&config.Config{AuthorityConfig: &config.AuthConfig{}}),
		authority.WithX509RootCerts(c.root),
		authority.WithX509Signer(c.inter, c.interKey),
		authority.WithDatabase(c.db),
		authority.WithQuietInit(),
	)
	if err != nil {
		c.db.Shutdown()
		c.closeKMS()
		return nil, fmt.Errorf("ca: start authority: %w", err)
	}
	if err := c.ensureCRLRows(); err != nil {
		c.auth.Shutdown()
		c.closeKMS()
		return nil, err
	}
	// A fresh CRL at every start: the CA may have been down past nextUpdate,
	// or have stopped between storing a revocation and publishing it.
	if _, err := c.generateCRL(ctx); err != nil {
		c.auth.Shutdown()
		c.closeKMS()
		return nil, err
	}
	c.crlStop, c.crlDone = make(chan struct{}), make(chan struct{})
	go c.runCRLSchedule(c.crlStop)
	return c, nil
}

// Close stops the CRL schedule and closes the database and the HSM.
func (c *CA) Close() error {
	close(c.crlStop)
	<-c.crlDone
	err := c.auth.Shutdown() // also closes the DB
	c.closeKMS()
	return err
}

func (c *CA) closeKMS() {
	if c.km != nil {
		c.km.Close()
	}
}

// Root is the root certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

// Intermediate is the issuing certificate.
func (c *CA) Intermediate() *x509.Certificate { return c.inter }

// Config is the configuration the CA was opened with.
func (c *CA) Config() *Config { return c.cfg }

func loadIntermediateKey(ctx context.Context, cfg *Config) (crypto.Signer, apiv1.KeyManager, error) {
	if cfg.Keys.KMS != "" {
		km, err := kms.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: cfg.Keys.KMS})
		if err != nil {
			return nil, nil, fmt.Errorf("ca: open HSM %s: %s", redactURI(cfg.Keys.KMS), redactURI(err.Error()))
		}
		s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: cfg.Keys.IntermediateKey})
		if err != nil {
			km.Close()
			return nil, nil, fmt.Errorf("ca: intermediate key %s in HSM: %w", cfg.Keys.IntermediateKey, err)
		}
		return s, km, nil
	}
	pw, err := cfg.password()
	if err != nil {
		return nil, nil, err
	}
	k, err := pemutil.Read(cfg.path(cfg.Keys.IntermediateKey), pemutil.WithPassword(pw))
	if err != nil {
		if strings.Contains(err.Error(), "decrypt") || strings.Contains(err.Error(), "password") {
			return nil, nil, fmt.Errorf("ca: intermediate key %s: wrong password (check --password-file or %s)", cfg.Keys.IntermediateKey, PasswordEnv)
		}
		return nil, nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("ca: intermediate key %s is not a signing key", cfg.Keys.IntermediateKey)
	}
	return s, nil, nil
}

func checkKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := key.Public().(equaler); !ok || !pk.Equal(cert.PublicKey) {
		return errors.New("ca: the intermediate key does not match intermediate_ca.crt")
	}
	return nil
}

var pinValue = regexp.MustCompile(`(?i)(pin-value=)[^;&?]*`)

// redactURI hides a PIN written into a KMS URI before it reaches a log or an error.
// redactURI hides the pin-value of a kms URI. Errors from the kms package
// quote the URI they could not use, so they go through it too (and are not
// wrapped: the wrapped error would still print the PIN).
func redactURI(u string) string { return pinValue.ReplaceAllString(u, "${1}REDACTED") }

// Role is what a role certificate allows at the API.
type Role string

// The roles. A user certificate has none.
const (
	RoleAdmin  Role = "admin"
	RoleEnroll Role = "enroll"
)

// RoleURIPrefix is the SAN URI prefix that marks a role certificate.
const RoleURIPrefix = "urn:imapgate:role:"

// URI is the SAN URI of the role.
func (r Role) URI() *url.URL { return &url.URL{Scheme: "urn", Opaque: "imapgate:role:" + string(r)} }

// ParseRole accepts "admin" or "enroll".
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleAdmin, RoleEnroll:
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: use admin or enroll", s)
}

// RoleOf returns the role a certificate carries, or "" for none (a user certificate).
func RoleOf(cert *x509.Certificate) Role {
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, RoleURIPrefix) {
			if r, err := ParseRole(strings.TrimPrefix(s, RoleURIPrefix)); err == nil {
				return r
			}
		}
	}
	return ""
}

// Requester is who asked for an operation, for the audit record.
type Requester struct {
	// Subject is the requester certificate's subject, or a description such as "imapgate ca init".
	Subject string `json:"subject"`
	// Serial is the requester certificate's serial (hex), if any.
	Serial string `json:"serial,omitempty"`
	// Role is the requester's role.
	Role Role `json:"role,omitempty"`
	// RemoteAddr is where the request came from.
	RemoteAddr string `json:"remote_addr,omitempty"`
}

// RequesterFromCert describes the holder of a verified role certificate.
func RequesterFromCert(cert *x509.Certificate, remote string) Requester {
	return Requester{Subject: cert.Subject.String(), Serial: SerialHex(cert.SerialNumber), Role: RoleOf(cert), RemoteAddr: remote}
}

func (r Requester) logAttrs() slog.Attr {
	return slog.Group("by", "subject", r.Subject, "serial", r.Serial, "role", string(r.Role), "remote_ip", r.RemoteAddr)
}
