package pkcs11

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPINNeverPrints(t *testing.T) {
	const secret = "93418275"
	p := NewPIN(secret)
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("login", "pin", p)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("login", "pin", p)
	js, err := json.Marshal(struct{ PIN *PIN }{p})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"%v":        fmt.Sprintf("%v", p),
		"%s":        fmt.Sprintf("%s", p),
		"%+v":       fmt.Sprintf("%+v", p),
		"%#v":       fmt.Sprintf("%#v", p),
		"%x":        fmt.Sprintf("%x", p),
		"%q":        fmt.Sprintf("%q", p),
		"%d":        fmt.Sprintf("%d", p),
		"struct %v": fmt.Sprintf("%v", struct{ P *PIN }{p}),
		"struct %+v": fmt.Sprintf("%+v", struct {
			P *PIN
		}{p}),
		"value %v":  fmt.Sprintf("%v", *p),
		"value %+v": fmt.Sprintf("%+v", struct{ P PIN }{*p}),
		"request":   fmt.Sprintf("%+v %#v", EnrollRequest{PIN: p, SOPIN: p}, EnrollRequest{PIN: p}),
		"error %w":  fmt.Errorf("login: %w %v", os.ErrClosed, p).Error(),
		"slog":      logBuf.String(),
		"json":      string(js),
	}
	for name, got := range cases {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(got, secret) || strings.Contains(got, fmt.Sprintf("%x", secret)) {
				t.Fatalf("PIN leaked: %s", got)
			}
			if !strings.Contains(got, Redacted) {
				t.Fatalf("no %s marker in %q", Redacted, got)
			}
		})
	}
}

func TestPINWipe(t *testing.T) {
	buf := []byte("123456")
	p := PINFromBytes(buf)
	if p.unsafeString() != "123456" {
		t.Fatal("PIN lost its value")
	}
	p.Wipe()
	if !bytes.Equal(buf, make([]byte, 6)) {
		t.Fatalf("Wipe left %q in the buffer", buf)
	}
	if !p.Empty() {
		t.Fatal("wiped PIN is not empty")
	}
	var nilPIN *PIN
	nilPIN.Wipe() // must not panic
}

func TestReadPINFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, content, want string
		wantErr             bool
	}{
		{"plain", "123456", "123456", false},
		{"newline", "123456\n", "123456", false},
		{"crlf", "654321\r\nignored\n", "654321", false},
		{"empty", "", "", true},
		{"only newline", "\n", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.WriteFile(f, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := ReadPINFile(f)
			if c.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.unsafeString() != c.want {
				t.Fatalf("got PIN of length %d, want %d", p.Len(), len(c.want))
			}
		})
	}
	if _, err := ReadPINFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing PIN file: want error")
	}
}
