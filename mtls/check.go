package mtls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/imapgate/imapgate/crl"
)

// Check is `imapgate front --check`: it loads the config file at path and everything
// it names (certificates, keys, CA files, ticket keys) without starting anything, as a
// start would, and fails where a start would only warn: the front's own certificate
// unfit for mail programs (frontCertProblems). It then fetches every CRL source once
// and verifies it (signature, issuer, freshness), writing to w what the front would do
// with it; a forged, unreadable or stale CRL fails the check. A CRL URL that cannot be
// reached from here is reported but does not fail it (the check may run where the CA
// is not reachable).
func Check(ctx context.Context, path string, w io.Writer, log *slog.Logger) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	// The check reads the running front's CRL state (an older CRL than it recorded
	// fails), but writes only to a copy: two processes must not rewrite one state file.
	copyPath, err := copyStateFile(cfg.CRLStateFile)
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(copyPath))
	cfg.CRLStateFile = copyPath
	o, err := cfg.Options(log)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range frontCertProblems(o.Certificates, time.Now()) {
		errs = append(errs, errors.New("front config: "+p))
	}
	for _, p := range loginTimeoutProblems(&o) {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
	for i, store := range o.CRLs {
		line, err := checkCRL(ctx, store, time.Now())
		name := fmt.Sprintf("crl[%d] %s (issuer %q)", i, crlSource(cfg.CRL[i]), store.Issuer().Subject.CommonName)
		fmt.Fprintf(w, "%s: %s\n", name, line)
		if err != nil {
			errs = append(errs, fmt.Errorf("front config: %s: %w", name, err))
		}
	}
	// The backends, as the start looks at them: reported, never failing the check
	// (it may run where they are not reachable).
	o.setDefaults() // the timeouts a start would use
	printBackendProbes(ctx, &o, w)
	return errors.Join(errs...)
}

// checkCRL loads store once and says what the front would do with its CRL at now. The
// error is set when the CRL is refused or stale.
func checkCRL(ctx context.Context, store *crl.Store, now time.Time) (string, error) {
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_, err := store.Refresh(lctx)
	cancel()
	var ue *url.Error
	switch {
	case errors.As(err, &ue):
		return fmt.Sprintf("not reachable from here (%v): the front starts, and refuses every certificate of this CA until it can fetch a valid CRL", err), nil
	case err != nil:
		return fmt.Sprintf("refused (%v): the front would refuse every certificate of this CA until a valid CRL is there", err),
			fmt.Errorf("CRL refused: %w (publish a CRL signed by this issuer: the CA's /crl)", err)
	}
	snap, err := store.Fresh(now)
	if err != nil {
		return fmt.Sprintf("stale (%v): the front would refuse every certificate of this CA", err),
			fmt.Errorf("CRL stale: %w (fetch a current CRL from the CA's /crl, or check that the CA still publishes)", err)
	}
	return fmt.Sprintf("valid: CRL number %s, %d revoked, signed %s, next update %s: the front accepts this CA's certificates that it does not list",
		snap.NumberString(), snap.Len(), snap.ThisUpdate.UTC().Format(time.RFC3339), snap.NextUpdate.UTC().Format(time.RFC3339)), nil
}

func crlSource(cc CRLConfig) string {
	if cc.URL != "" {
		return cc.URL
	}
	return cc.File
}

// copyStateFile copies the CRL state file at path (if there is one) into a new
// temporary directory and returns the copy's path.
func copyStateFile(path string) (string, error) {
	dir, err := os.MkdirTemp("", "imapgate-check-")
	if err != nil {
		return "", fmt.Errorf("front check: %w", err)
	}
	dst := filepath.Join(dir, "crl-state.json")
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dst, nil
	case err != nil:
		os.RemoveAll(dir)
		return "", fmt.Errorf("front config: crl_state_file: %w", err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("front check: %w", err)
	}
	return dst, nil
}
