package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the readiness probe
)

// PostgresBin finds the server binaries where Debian's postgresql package
// puts them, /usr/lib/postgresql/<major>/bin, taking the newest major: the
// metapackage installs 15 on Debian 12 and 17 on Debian 13. IMAPGATE_PG_BIN
// overrides it.
func PostgresBin() string {
	if bin := os.Getenv("IMAPGATE_PG_BIN"); bin != "" {
		return bin
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestMajor := "/usr/lib/postgresql/15/bin", -1
	for _, d := range dirs {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil || major <= bestMajor {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			best, bestMajor = d, major
		}
	}
	return best
}

// Postgres is a private PostgreSQL cluster on 127.0.0.1.
type Postgres struct {
	Port int
	Dir  string
	// DSN connects as the superuser "imapgate" (password "imapgate") to database
	// "postgres"; the CA creates its own database when given Database.
	DSN string
}

// DSNFor is a DSN for database name on this cluster.
func (p *Postgres) DSNFor(name string) string {
	return fmt.Sprintf("postgresql://imapgate:imapgate@127.0.0.1:%d/%s?sslmode=disable", p.Port, name)
}

// StartPostgres runs initdb and postgres in a temporary directory, listening
// only on 127.0.0.1, and stops it when the test ends. PostgreSQL refuses to run
// as root, so it runs as the postgres system user when the test is root.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := PostgresBin()
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		t.Fatalf("testenv: PostgreSQL is not installed (%v): run 'make deps'", err)
	}
	// t.TempDir is 0700 root; PostgreSQL's user must own its directory.
	dir, err := os.MkdirTemp("", "imapgate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cred := runAs(t)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte("imapgate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		os.Chown(pwfile, int(cred.Uid), int(cred.Gid))
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "imapgate", "--pwfile", pwfile,
		"-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200")
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	logf, _ := os.Create(filepath.Join(dir, "postgres.log"))
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			srv.Process.Kill()
			<-done
		}
		logf.Close()
	})
	p := &Postgres{Port: port, Dir: dir}
	p.DSN = p.DSNFor("postgres")
	waitPostgres(t, p, done)
	return p
}

func waitPostgres(t testing.TB, p *Postgres, done chan struct{}) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(p.Dir, "postgres.log"))
			t.Fatalf("testenv: postgres exited at start:\n%s", b)
		default:
		}
		if err := pingPostgres(p.DSN); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("testenv: postgres on port %d not ready after 60s: %v", p.Port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pingPostgres opens a connection through pgx's database/sql driver, which
// smallstep's nosql already links.
func pingPostgres(dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// runAs is the postgres user's credential when we are root, else nil (run as ourselves).
func runAs(t testing.TB) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("testenv: running as root needs the postgres system user (run 'make deps'): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}
