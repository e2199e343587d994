package secretfile

import (
	"fmt"
	"io"
	"os"
)

// MaxSize bounds what Read takes: every secret imapgate reads is a line or a
// PEM block, so a larger file is a wrong path, not a secret.
const MaxSize = 1 << 20

// Check refuses the file at path if its group or others have any permission
// on it. what names the file for the message ("PIN file", "tls.key_file").
func Check(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return checkMode(fi, path, what)
}

func checkMode(fi os.FileInfo, path, what string) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s can be read or changed by others (mode %v): run chmod 600 %s", what, path, perm, path)
	}
	return nil
}

// Read returns the contents of the secret file at path after Check's test,
// made on the open file (so a swap between check and read cannot pass a
// loose file).
func Read(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if err := checkMode(fi, path, what); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) > MaxSize {
		clear(b)
		return nil, fmt.Errorf("%s %s is larger than %d bytes: is it the right file?", what, path, MaxSize)
	}
	return b, nil
}
