package caclient

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// WriteCredential writes a role credential directory: cert.pem (the chain),
// key.pem (0600) and roots.pem. It refuses a directory that is not empty, so a
// credential is never overwritten by mistake.
func WriteCredential(dir string, chainPEM []byte, key crypto.Signer, rootsPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("caclient: credential dir: %w", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		return fmt.Errorf("caclient: credential dir %s is not empty; refusing to overwrite a credential", dir)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("caclient: encode credential key: %w", err)
	}
	kb := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, KeyFile), kb, 0o600); err != nil {
		return fmt.Errorf("caclient: write credential key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile), chainPEM, 0o644); err != nil {
		return fmt.Errorf("caclient: write credential certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, RootsFile), rootsPEM, 0o644); err != nil {
		return fmt.Errorf("caclient: write credential roots: %w", err)
	}
	return nil
}

// RootsPEM returns the roots.pem of a credential directory.
func RootsPEM(credDir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(credDir, RootsFile))
	if err != nil {
		return nil, fmt.Errorf("caclient: credential %s: %w", credDir, err)
	}
	return b, nil
}
