package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	// Registers the pkcs11 KMS type (needs cgo) so the intermediate key can live in an HSM.
	_ "go.step.sm/crypto/kms/pkcs11"
)

// InitOptions are the choices of `imapgate ca init`.
type InitOptions struct {
	Dir  string
	Name string
	// URL is the API's https base URL; its host goes into the CA's TLS certificate.
	URL string
	// PublicURL is the base URL for the CRL and AIA (default URL).
	PublicURL string
	// HTTPListen is the optional plain-HTTP listener for the public paths.
	HTTPListen string
	// PasswordFile encrypts the key files; empty means IMAPGATE_CA_PASSWORD.
	PasswordFile string
	// KMS, when set, is a pkcs11: KMS URI; the intermediate key is generated inside it.
	KMS string
	// DB overrides the default bbolt file.
	DB *DBConfig
	// KeyType is the CA key algorithm: "EC" (P-256, default) or "RSA" (3072).
	KeyType string
	// Now is the clock (tests); zero means time.Now.
	Now time.Time
	// Log receives the audit line of the first admin credential (default slog.Default()).
	Log *slog.Logger
}

const (
	rootValidity         = 10 * 365 * 24 * time.Hour
	intermediateValidity = 5 * 365 * 24 * time.Hour
	tlsValidity          = 365 * 24 * time.Hour
)

const rootTemplate = `{
	"subject": {{ toJson .Subject }},
	"issuer": {{ toJson .Subject }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 1}
}`

const intermediateTemplate = `{
	"subject": {{ toJson .Subject }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

// Init creates a new CA in opts.Dir: root and intermediate certificates and keys,
// the CA's TLS certificate, ca.yaml, and a first admin credential in DIR/admin.
// It refuses to touch a directory that already holds a CA.
func Init(ctx context.Context, opts InitOptions) (*Config, error) {
	if opts.Dir == "" {
		return nil, errors.New("ca: init: no directory given")
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, ConfigFile)); err == nil {
		return nil, fmt.Errorf("ca: init: %s already holds a CA; refusing to overwrite it (use another --dir)", opts.Dir)
	}
	for _, f := range []string{RootKeyFile, IntermediateKeyFile, DBFile} {
		if _, err := os.Stat(filepath.Join(opts.Dir, f)); err == nil {
			return nil, fmt.Errorf("ca: init: %s already exists; refusing to overwrite it", filepath.Join(opts.Dir, f))
		}
	}
	if ents, err := os.ReadDir(opts.Dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("ca: init: %s is not empty; give a new or empty directory", opts.Dir)
	}
	cfg := DefaultConfig()
	cfg.Name, cfg.URL, cfg.PublicURL, cfg.HTTPListen = opts.Name, opts.URL, opts.PublicURL, opts.HTTPListen
	if opts.PasswordFile != "" {
		abs, err := filepath.Abs(opts.PasswordFile)
		if err != nil {
			return nil, err
		}
		cfg.Keys.PasswordFile = abs
	}
	if opts.DB != nil {
		cfg.DB = *opts.DB
	}
	cfg.dir = opts.Dir
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pw, err := readPassword(opts.PasswordFile)
	if err != nil {
		return nil, err
	}
	if len(pw) < 8 {
		return nil, errors.New("ca: init: the key password must have at least 8 characters")
	}
	// Everything is made in a staging directory beside DIR and renamed into place
	// at the end, so a failed init leaves nothing half-made behind.
	parent := filepath.Dir(filepath.Clean(opts.Dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	stage, err := os.MkdirTemp(parent, ".imapgate-ca-init-")
	if err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(stage)
		}
	}()
	cfg.dir = stage
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	kty, size := "EC", 0
	crv := "P-256"
	if opts.KeyType == "RSA" {
		kty, crv, size = "RSA", "", 3072
	}

	// Root: the key is written encrypted; it is needed again only to issue a new intermediate.
	rootKey, err := keyutil.GenerateSigner(kty, crv, size)
	if err != nil {
		return nil, fmt.Errorf("ca: init: root key: %w", err)
	}
	root, err := createCA(cfg.Name+" Root CA", cfg.Name, rootTemplate, rootKey.Public(), nil, rootKey, now, rootValidity)
	if err != nil {
		return nil, fmt.Errorf("ca: init: root: %w", err)
	}

	// Intermediate: in a file or in the HSM.
	var interSigner crypto.Signer
	if opts.KMS != "" {
		km, err := kms.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: opts.KMS})
		if err != nil {
			return nil, fmt.Errorf("ca: init: open HSM %s: %s", redactURI(opts.KMS), redactURI(err.Error()))
		}
		defer km.Close()
		id := make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
		keyURI := fmt.Sprintf("pkcs11:id=%s;object=imapgate-intermediate", hex.EncodeToString(id))
		alg := apiv1.ECDSAWithSHA256
		if kty == "RSA" {
			alg = apiv1.SHA256WithRSA
		}
		resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: keyURI, SignatureAlgorithm: alg, Bits: size})
		if err != nil {
			return nil, fmt.Errorf("ca: init: create intermediate key in HSM: %w", err)
		}
		interSigner, err = km.CreateSigner(&resp.CreateSignerRequest)
		if err != nil {
			return nil, fmt.Errorf("ca: init: HSM signer: %w", err)
		}
		cfg.Keys.KMS, cfg.Keys.IntermediateKey = opts.KMS, keyURI
	} else {
		interSigner, err = keyutil.GenerateSigner(kty, crv, size)
		if err != nil {
			return nil, fmt.Errorf("ca: init: intermediate key: %w", err)
		}
		if err := writeKey(cfg.path(IntermediateKeyFile), interSigner, pw); err != nil {
			return nil, err
		}
	}
	inter, err := createCA(cfg.Name+" Intermediate CA", cfg.Name, intermediateTemplate, interSigner.Public(), root, rootKey, now, intermediateValidity)
	if err != nil {
		return nil, fmt.Errorf("ca: init: intermediate: %w", err)
	}
	if err := writeKey(cfg.path(RootKeyFile), rootKey, pw); err != nil {
		return nil, err
	}
	if err := writeCerts(cfg.path(RootCertFile), 0o644, root); err != nil {
		return nil, err
	}
	if err := writeCerts(cfg.path(IntermediateCertFile), 0o644, inter); err != nil {
		return nil, err
	}
	b, err := cfg.marshal()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfg.path(ConfigFile), b, 0o600); err != nil {
		return nil, fmt.Errorf("ca: init: write config: %w", err)
	}

	// The first admin credential goes through the ordinary issuance path, so it is
	// recorded in the DB and can be revoked like any other.
	var copts []Option
	if opts.Log != nil {
		copts = append(copts, WithLogger(opts.Log))
	}
	c, err := Open(ctx, cfg, copts...)
	if err != nil {
		return nil, err
	}
	// So is the CA's own HTTPS certificate.
	err = c.issueOwnTLSCert(ctx, Requester{Subject: "imapgate ca init"})
	if err == nil {
		_, err = c.IssueCredential(ctx, RoleAdmin, "first admin", cfg.path(AdminDir), Requester{Subject: "imapgate ca init"})
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	os.Remove(opts.Dir) // an empty directory given by the user; Rename cannot replace it otherwise
	if err := os.Rename(stage, opts.Dir); err != nil {
		return nil, fmt.Errorf("ca: init: move the new CA into place: %w", err)
	}
	done = true
	cfg.dir = opts.Dir
	return cfg, nil
}

func createCA(cn, org, tpl string, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	data := x509util.NewTemplateData()
	data.SetSubject(x509util.Subject{CommonName: cn, Organization: []string{org}})
	cert, err := x509util.NewCertificateFromX509(&x509.Certificate{PublicKey: pub}, x509util.WithTemplate(tpl, data))
	if err != nil {
		return nil, err
	}
	c := cert.GetCertificate()
	c.PublicKey = pub
	c.NotBefore, c.NotAfter = now.Add(-time.Minute).UTC(), now.Add(validity).UTC()
	issuer := parent
	if issuer == nil {
		issuer = c // self-signed root
	}
	return x509util.CreateCertificate(c, issuer, pub, parentKey)
}

// writeKey writes a private key as PEM, encrypted when pw is given, mode 0600.
// It refuses to overwrite an existing file.
func writeKey(path string, key crypto.Signer, pw []byte) error {
	var opts []pemutil.Options
	if pw != nil {
		opts = append(opts, pemutil.WithPassword(pw))
	}
	blk, err := pemutil.Serialize(key, opts...)
	if err != nil {
		return fmt.Errorf("ca: encode key %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ca: write key: %w", err)
	}
	if err := pem.Encode(f, blk); err != nil {
		f.Close()
		return fmt.Errorf("ca: write key %s: %w", path, err)
	}
	return f.Close()
}

func writeCerts(path string, mode os.FileMode, certs ...*x509.Certificate) error {
	if err := os.WriteFile(path, encodeCerts(certs...), mode); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	return nil
}

func encodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
