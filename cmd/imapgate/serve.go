package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.step.sm/crypto/pemutil"
	"gopkg.in/yaml.v3"

	"github.com/imapgate/imapgate/ca"
	enrollui "github.com/imapgate/imapgate/enroll-ui"
)

// Files `imapgate serve` keeps in DIR/serve/, beside what `ca init` made in DIR.
const (
	serveSubdir     = "serve"
	serveFrontCfg   = "front.yaml"     // the front's config; written last on the first start
	serveUICfg      = "enroll-ui.yaml" // the help desk UI's config
	serveUILinkFile = "enroll-ui-link" // the UI's access link while it runs (0600)
	serveAgentDir   = "helpdesk"       // the UI's enrollment-agent credential
)

// serveOptions are the first-start choices of `imapgate serve`; once DIR is set
// up, the files in it rule and these flags are refused (edit the files instead).
type serveOptions struct {
	name, caURL, crlListen, frontListen, metricsListen, backend, uiListen, module string
	frontNames                                                                    []string
	crlPoll                                                                       time.Duration
}

// firstStartFlags may only be given while DIR is not set up yet.
var firstStartFlags = []string{"name", "ca-url", "crl-listen", "front-listen", "front-name", "metrics-listen", "backend", "ui-listen", "module", "crl-poll"}

func newServeCmd() *cobra.Command {
	var o serveOptions
	var dir, passwordFile string
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "run the CA, the front and the help desk UI in one process (a small office)",
		Long: `Runs the CA (embedded database), the mTLS IMAPS front and the help desk web UI in one
process: the same code as imapgate ca serve, front and enroll-ui, for a site that needs one
machine. On the first start DIR is set up: what imapgate ca init makes (the CA key password
from --password-file or $` + ca.PasswordEnv + `), then in DIR/serve an enrollment-agent
credential for the UI, enroll-ui.yaml and front.yaml; the flags below choose their first
contents and are refused afterwards (edit the files). At every start the front gets a
server certificate from its own CA (serverAuth, CA:FALSE), renewed while it runs once a
third of its life is left. Every listener is on 127.0.0.1 unless the flags or files say
otherwise. SIGHUP re-reads front.yaml; SIGTERM (or Ctrl-C) drains the front and stops all.
See docs/install.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), cmd, dir, passwordFile, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the directory of everything (created on the first start; required)")
	f.StringVar(&passwordFile, "password-file", "", "file with the CA key password (default from ca.yaml, then $"+ca.PasswordEnv+")")
	f.StringVar(&o.name, "name", "imapgate", "first start: organisation name in the CA's certificates")
	f.StringVar(&o.caURL, "ca-url", "https://127.0.0.1:8443", "first start: the CA API's URL; the CA listens on 127.0.0.1 and its port")
	f.StringVar(&o.crlListen, "crl-listen", "127.0.0.1:8080", "first start: plain-HTTP listener of the CRL and roots (the CRL URL in certificates)")
	f.StringVar(&o.frontListen, "front-listen", "127.0.0.1:9993", "first start: the front's IMAPS address (\":993\" to serve the network)")
	f.StringArrayVar(&o.frontNames, "front-name", nil, "first start: DNS name or IP in the front's certificate (repeat; default the host of --ca-url)")
	f.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:9994", "first start: the front's Prometheus /metrics (plain HTTP)")
	f.StringVar(&o.backend, "backend", "127.0.0.1:143", "first start: the IMAP server (Dovecot) behind the front")
	f.StringVar(&o.uiListen, "ui-listen", enrollui.DefaultListen, "first start: the help desk UI")
	f.StringVar(&o.module, "module", "", "first start: the UI's PKCS#11 module (default: OpenSC's if installed; none: no UI)")
	f.DurationVar(&o.crlPoll, "crl-poll", 10*time.Second, "first start: how often the front fetches the CRL")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func runServe(ctx context.Context, cmd *cobra.Command, dir, passwordFile string, o serveOptions) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	sdir := filepath.Join(dir, serveSubdir)
	frontCfg, uiCfg := filepath.Join(sdir, serveFrontCfg), filepath.Join(sdir, serveUICfg)
	out := cmd.OutOrStdout()
	if exists(frontCfg) {
		for _, n := range firstStartFlags {
			if cmd.Flags().Changed(n) {
				return usageError{fmt.Errorf("--%s is for the first start only: %s is set up, edit %s or %s", n, dir, frontCfg, uiCfg)}
			}
		}
	}
	if !exists(filepath.Join(dir, ca.ConfigFile)) {
		u, err := url.Parse(o.caURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return usageError{fmt.Errorf("--ca-url %q: give https://HOST:PORT", o.caURL)}
		}
		cfg, err := ca.Init(ctx, ca.InitOptions{Dir: dir, Name: o.name, URL: o.caURL, PublicURL: "http://" + o.crlListen,
			HTTPListen: o.crlListen, PasswordFile: passwordFile})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "imapgate serve: CA %q created in %s (admin credential %s; keep it safe)\n", cfg.Name, dir, filepath.Join(dir, ca.AdminDir))
	}
	c, err := caServeOptions{dir: dir, passwordFile: passwordFile}.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := setUpServe(ctx, c, sdir, o); err != nil {
		return err
	}
	frontPair, err := loadFrontPaths(frontCfg)
	if err != nil {
		return err
	}
	if _, err := ensureFrontCert(ctx, c, frontPair, o.frontNamesOr(c.Config().URL)); err != nil {
		return err
	}
	_, serveCA, err := listenCA(c)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		part string
		err  error
	}
	results := make(chan result, 4)
	parts := 0
	run := func(part string, f func(context.Context) error) {
		parts++
		go func() { results <- result{part, f(ctx)} }()
	}
	run("ca", serveCA)
	renewed := make(chan struct{}, 1)
	run("front", func(ctx context.Context) error { return runFront(ctx, frontCfg, renewed) })
	run("front certificate renewal", func(ctx context.Context) error {
		return renewFrontCert(ctx, c, frontPair, renewed)
	})
	if ui, err := enrollui.LoadConfig(uiCfg); err != nil {
		return err
	} else if ui.Module == "" {
		slog.Warn("serve: the help desk UI is not started: no PKCS#11 module in " + uiCfg + " (set module: to your card reader's, e.g. opensc-pkcs11.so, and restart)")
	} else {
		if ui.CAAddress == "" && sameCA(ui.CAURL, c.Config().URL) {
			// The CA listens on 127.0.0.1 (or where ca.yaml says), not
			// necessarily where its URL's host resolves: connect there.
			ui.CAAddress = loopbackAddr(c.Config().ListenAddr())
		}
		if ui.LinkFile == "" {
			// The link unlocks revocation here (the UI has the admin
			// credential): besides the output (the journal under systemd)
			// it goes to a file only this user reads.
			ui.LinkFile = filepath.Join(sdir, serveUILinkFile)
		}
		run("enroll-ui", func(ctx context.Context) error { return runUI(ctx, ui, out) })
	}
	fmt.Fprintf(out, "imapgate serve: CA %s (CRL %s), front %s — configs in %s\n", c.Config().URL, c.Config().CRLURL(), frontListenOf(frontCfg), sdir)

	// The first part to end (an error, or ctx's end) stops the others; the
	// process waits for all of them, so a drain is never cut short.
	var first error
	for i := 0; i < parts; i++ {
		r := <-results
		if r.err != nil && !errors.Is(r.err, context.Canceled) && first == nil {
			first = fmt.Errorf("serve: %s: %w", r.part, r.err)
		}
		cancel()
	}
	return first
}

// sameCA says whether the UI's ca_url is this CA's URL.
func sameCA(a, b string) bool {
	return strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}

// loopbackAddr is a listen address as a local client dials it: an
// unspecified host (":8443", "0.0.0.0:8443", "[::]:8443") becomes 127.0.0.1.
func loopbackAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// runUI is `imapgate enroll-ui` on a loaded config.
func runUI(ctx context.Context, cfg *enrollui.Config, out io.Writer) error {
	srv, err := enrollui.New(cfg, enrollui.Options{Log: slog.Default()})
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Run(ctx, out)
}

func (o serveOptions) frontNamesOr(caURL string) []string {
	if len(o.frontNames) > 0 {
		return o.frontNames
	}
	if u, err := url.Parse(caURL); err == nil && u.Hostname() != "" {
		return []string{u.Hostname()}
	}
	return []string{"127.0.0.1"}
}

// setUpServe writes what is missing in DIR/serve: the UI's agent credential and
// config, then front.yaml (last: its presence means the set-up is complete).
func setUpServe(ctx context.Context, c *ca.CA, sdir string, o serveOptions) error {
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	cfg := c.Config()
	caDir := cfg.Dir()
	agentDir := filepath.Join(sdir, serveAgentDir)
	if !exists(filepath.Join(agentDir, "cert.pem")) {
		os.RemoveAll(agentDir) // a half-written one from an interrupted start
		if _, err := c.IssueCredential(ctx, ca.RoleEnroll, "imapgate serve help desk UI", agentDir,
			ca.Requester{Subject: "imapgate serve"}); err != nil {
			return fmt.Errorf("serve: the UI's enrollment-agent credential: %w", err)
		}
	}
	uiCfg := filepath.Join(sdir, serveUICfg)
	if !exists(uiCfg) {
		module := o.module
		if module == "" {
			module = findOpenSC()
		}
		ui := struct {
			Listen    string `yaml:"listen"`
			Module    string `yaml:"module"`
			CAURL     string `yaml:"ca_url"`
			AgentCred string `yaml:"agent_cred"`
			AdminCred string `yaml:"admin_cred"`
		}{o.uiListen, module, cfg.URL, agentDir, filepath.Join(caDir, ca.AdminDir)}
		if err := writeYAML(uiCfg, "the help desk UI of imapgate serve; keys in docs/enroll-ui.md", ui); err != nil {
			return err
		}
	}
	frontCfg := filepath.Join(sdir, serveFrontCfg)
	if exists(frontCfg) {
		return nil
	}
	type crlSource struct {
		URL        string `yaml:"url"`
		IssuerFile string `yaml:"issuer_file"`
		Interval   string `yaml:"interval"`
	}
	var front struct {
		Listen        string `yaml:"listen"`
		MetricsListen string `yaml:"metrics_listen"`
		CRLStateFile  string `yaml:"crl_state_file"`
		TLS           struct {
			CertFile     string `yaml:"cert_file"`
			KeyFile      string `yaml:"key_file"`
			ClientCAFile string `yaml:"client_ca_file"`
		} `yaml:"tls"`
		CRL     []crlSource `yaml:"crl"`
		Backend struct {
			Address string `yaml:"address"`
		} `yaml:"backend"`
	}
	front.Listen, front.MetricsListen = o.frontListen, o.metricsListen
	// The highest CRL number seen stays with the rest of this gate's state, not in
	// the system-wide default under /var/lib.
	front.CRLStateFile = filepath.Join(sdir, "front-crl-state.json")
	front.TLS.CertFile, front.TLS.KeyFile = filepath.Join(sdir, serverCertFile), filepath.Join(sdir, serverKeyFile)
	front.TLS.ClientCAFile = filepath.Join(caDir, ca.RootCertFile)
	// The front fetches the CRL from the plain-HTTP listener serve binds itself
	// (--crl-listen): the CA's HTTPS URL may name a public host that this process
	// does not listen on. Over plain HTTP the CRL's signature, its number (kept in
	// crl_state_file) and its own thisUpdate are what the front trusts.
	front.CRL = []crlSource{{URL: cfg.CRLURL(), IssuerFile: filepath.Join(caDir, ca.IntermediateCertFile), Interval: o.crlPoll.String()}}
	front.Backend.Address = o.backend
	return writeYAML(frontCfg, "the front of imapgate serve; keys in docs/front.md; SIGHUP re-reads it", front)
}

func writeYAML(path, comment string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return replaceFile(path, append([]byte("# "+comment+"\n"), b...), 0o600)
}

// findOpenSC is the OpenSC module if it is installed (Debian's opensc-pkcs11).
func findOpenSC() string {
	for _, pat := range []string{"/usr/lib/*/opensc-pkcs11.so", "/usr/lib/opensc-pkcs11.so", "/usr/lib64/opensc-pkcs11.so"} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			return m[0]
		}
	}
	return ""
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// frontPaths are the front's certificate files, as front.yaml names them.
type frontPaths struct{ cert, key string }

func loadFrontPaths(frontCfg string) (frontPaths, error) {
	var f struct {
		TLS struct {
			CertFile string `yaml:"cert_file"`
			KeyFile  string `yaml:"key_file"`
		} `yaml:"tls"`
	}
	b, err := os.ReadFile(frontCfg)
	if err == nil {
		err = yaml.Unmarshal(b, &f)
	}
	if err != nil {
		return frontPaths{}, fmt.Errorf("serve: %s: %w", frontCfg, err)
	}
	if f.TLS.CertFile == "" || f.TLS.KeyFile == "" {
		return frontPaths{}, fmt.Errorf("serve: %s: tls.cert_file and tls.key_file are required", frontCfg)
	}
	return frontPaths{f.TLS.CertFile, f.TLS.KeyFile}, nil
}

func frontListenOf(frontCfg string) string {
	var f struct {
		Listen string `yaml:"listen"`
	}
	if b, err := os.ReadFile(frontCfg); err == nil && yaml.Unmarshal(b, &f) == nil && f.Listen != "" {
		return "imaps://" + f.Listen
	}
	return "(see " + frontCfg + ")"
}

// ensureFrontCert has the CA issue the front's certificate when there is none,
// when it is not from this CA, or when less than a third of its life is left;
// a renewal keeps the names of the old one. It reports whether it issued.
func ensureFrontCert(ctx context.Context, c *ca.CA, p frontPaths, names []string) (bool, error) {
	if old, err := tls.LoadX509KeyPair(p.cert, p.key); err == nil && old.Leaf != nil {
		if !frontCertDue(c, old.Leaf, time.Now()) {
			return false, nil
		}
		names = append(append([]string{}, old.Leaf.DNSNames...), ipStrings(old.Leaf.IPAddresses)...)
	}
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	pair, err := c.ServerCertificate(ctx, dns, ips, 0, ca.Requester{Subject: "imapgate serve"})
	if err != nil {
		return false, fmt.Errorf("serve: the front's certificate: %w", err)
	}
	blk, err := pemutil.Serialize(pair.PrivateKey)
	if err != nil {
		return false, err
	}
	var chain []byte
	for _, der := range pair.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	// Key first, as imapgate cert server does: a stop in between leaves a pair
	// that does not match, which the next start finds due and issues again.
	if err := replaceFile(p.key, pem.EncodeToMemory(blk), 0o600); err != nil {
		return false, err
	}
	if err := replaceFile(p.cert, chain, 0o644); err != nil {
		return false, err
	}
	slog.Info("serve: the front's certificate issued by its CA", "serial", ca.SerialHex(pair.Leaf.SerialNumber),
		"names", strings.Join(names, ","), "not_after", pair.Leaf.NotAfter)
	return true, nil
}

func frontCertDue(c *ca.CA, leaf *x509.Certificate, now time.Time) bool {
	if leaf.CheckSignatureFrom(c.Intermediate()) != nil {
		return true
	}
	if revoked, err := c.IsRevoked(leaf); err != nil || revoked {
		return true
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotAfter.Sub(now) < life/3
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// renewFrontCert checks the front's certificate twice a day while serve runs
// and tells the front to reload when it issued a new one.
func renewFrontCert(ctx context.Context, c *ca.CA, p frontPaths, renewed chan<- struct{}) error {
	t := time.NewTicker(12 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		did, err := ensureFrontCert(ctx, c, p, nil)
		if err != nil {
			slog.Error("serve: renewing the front's certificate failed; retrying in 12 h", "error", err)
			continue
		}
		if did {
			select {
			case renewed <- struct{}{}:
			default:
			}
		}
	}
}
