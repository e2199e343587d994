package caclient_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

func TestNewRefuses(t *testing.T) {
	c := testenv.StartCA(t)
	loose := filepath.Join(t.TempDir(), "loose")
	os.MkdirAll(loose, 0o700)
	for _, f := range []string{"cert.pem", "key.pem", "roots.pem"} {
		b, _ := os.ReadFile(filepath.Join(c.EnrollCred, f))
		os.WriteFile(filepath.Join(loose, f), b, 0o644) // key.pem readable by all
	}
	tests := []struct {
		name, url, cred, want string
	}{
		{"plain http", "http://127.0.0.1:1", c.EnrollCred, "https://"},
		{"no host", "https://", c.EnrollCred, "https://"},
		{"not a credential", c.URL, t.TempDir(), "credential directory"},
		{"key readable by others", c.URL, loose, "chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := caclient.New(tt.url, tt.cred)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New(%q, %q) = %v, want an error mentioning %q", tt.url, tt.cred, err, tt.want)
			}
		})
	}
}

func TestErrorsCarryTheCAsSentence(t *testing.T) {
	c := testenv.StartCA(t)
	cl, err := caclient.New(c.URL, c.EnrollCred)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Revoke(context.Background(), "01", "keyCompromise", "")
	var ae *caclient.Error
	if !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(ae.Message, "needs admin") {
		t.Fatalf("revoke as agent: %v", err)
	}
	// A server whose certificate does not chain to roots.pem is named as such.
	other := testenv.StartCA(t)
	cl2, _ := caclient.New(other.URL, c.EnrollCred)
	if _, err := cl2.List(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "not this CA") {
		t.Fatalf("talking to another CA: %v", err)
	}
}
