package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("x", size)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name    string
		path    string
		wantErr string
	}{
		{"owner only", write("ok", 0o600, 6), ""},
		{"read-only owner", write("ro", 0o400, 6), ""},
		{"group readable", write("g", 0o640, 6), "chmod 600"},
		{"world readable", write("o", 0o604, 6), "chmod 600"},
		{"world writable", write("w", 0o602, 6), "chmod 600"},
		{"too large", write("big", 0o600, MaxSize+1), "larger than"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
		{"a directory", dir, "not a regular file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := Read(c.path, "PIN file")
			if c.wantErr == "" {
				if err != nil || len(b) != 6 {
					t.Fatalf("read: %q, %v", b, err)
				}
				if err := Check(c.path, "PIN file"); err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.HasPrefix(err.Error(), "PIN file") {
				t.Fatalf("read: %v, want an error saying %q", err, c.wantErr)
			}
		})
	}
}
