package ca_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// copyDir copies a CA directory (keys, config, credentials) for a second node.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// twoNodes starts PostgreSQL and two nodes of one CA on it; it returns them
// and node A's directory.
func twoNodes(t *testing.T) (a, b *testenv.CA, dirA string) {
	t.Helper()
	a, b, dirA, _ = twoNodesPG(t, nil)
	return a, b, dirA
}

// twoNodesPG is twoNodes that also returns the database, for a test that plays
// a third node by writing rows itself.
func twoNodesPG(t *testing.T, configure func(*ca.Config)) (a, b *testenv.CA, dirA string, db *sql.DB) {
	t.Helper()
	pg := testenv.StartPostgres(t)
	dirA = filepath.Join(t.TempDir(), "ca")
	// The database does not exist yet: the CA creates it.
	a = testenv.StartCA(t, testenv.CAOptions{Dir: dirA, DB: &ca.DBConfig{Type: "postgresql", DataSource: pg.DSNFor("imapgate_ca")}, Configure: configure})
	dirB := filepath.Join(t.TempDir(), "ca")
	copyDir(t, dirA, dirB)
	b = testenv.StartCA(t, testenv.CAOptions{Dir: dirB, Node: true, Configure: configure})
	if b.URL == a.URL {
		t.Fatal("node B listens where node A does")
	}
	db, err := sql.Open("pgx", pg.DSNFor("imapgate_ca"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return a, b, dirA, db
}

// TestPostgresTwoNodes: two CA nodes share one PostgreSQL database; a revocation
// on one is on the other's CRL, and issuance on either is listed by both.
func TestPostgresTwoNodes(t *testing.T) {
	ctx := context.Background()
	a, b, dirA := twoNodes(t)

	issA, err := client(t, a, a.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "ivan@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	issB, err := client(t, b, b.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "ivan@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	for name, node := range map[string]*testenv.CA{"A": a, "B": b} {
		list, err := client(t, node, node.AdminCred).List(ctx, "ivan@example.org")
		if err != nil || len(list) != 2 {
			t.Fatalf("node %s lists %d certificates for ivan (%v), want both nodes' 2", name, len(list), err)
		}
		// The audit trail too: a node lists what the other wrote (it keeps
		// no index of its own writes alone on PostgreSQL).
		for _, serial := range []string{issA.Serial, issB.Serial} {
			trail, err := client(t, node, node.AdminCred).Audit(ctx, caclient.AuditQuery{Serial: serial})
			if err != nil || len(trail) != 1 || trail[0].Action != "issue" || trail[0].Result != "ok" {
				t.Fatalf("node %s's audit trail for %s: %+v (%v), want its issuance, ok", name, serial, trail, err)
			}
		}
	}

	// Revoke A's certificate on node A; node B's /crl lists it.
	if _, err := client(t, a, a.AdminCred).Revoke(ctx, issA.Serial, "keyCompromise", "lost"); err != nil {
		t.Fatal(err)
	}
	if _, ok := crlHas(fetchCRL(t, b), issA.Serial); !ok {
		t.Fatal("node B's CRL does not list the revocation made on node A")
	}
	// And the other way round; both nodes now serve a CRL with both entries.
	if _, err := client(t, b, b.AdminCred).Revoke(ctx, issB.Serial, "superseded", ""); err != nil {
		t.Fatal(err)
	}
	for name, node := range map[string]*testenv.CA{"A": a, "B": b} {
		crl := fetchCRL(t, node)
		_, okA := crlHas(crl, issA.Serial)
		_, okB := crlHas(crl, issB.Serial)
		if !okA || !okB {
			t.Errorf("node %s CRL: A's revocation %v, B's %v; want both", name, okA, okB)
		}
		// A search by serial reads the record and the revocation by key.
		for _, serial := range []string{issA.Serial, issB.Serial} {
			got, err := client(t, node, node.AdminCred).Search(ctx, caclient.CertQuery{Serial: serial})
			if err != nil || len(got) != 1 || got[0].Status != "revoked" {
				t.Errorf("node %s, search for %s: %+v (%v), want it revoked", name, serial, got, err)
			}
		}
	}
	// Revoking on B what A already revoked is a conflict: one shared truth.
	if _, err := client(t, b, b.AdminCred).Revoke(ctx, issA.Serial, "keyCompromise", ""); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("revoke on B of what A revoked: %v, want 409", err)
	}
	// A restart of node A keeps it all (the DB is PostgreSQL, not the node).
	a.Stop()
	a2 := testenv.StartCA(t, testenv.CAOptions{Dir: dirA})
	if _, ok := crlHas(fetchCRL(t, a2), issB.Serial); !ok {
		t.Error("after restart node A's CRL misses the revocation made on B")
	}
}

// TestPostgresConcurrentRevocations: both nodes revoke at the same time; the CRL
// stored last still lists every revocation, and no two CRLs share a number.
// (smallstep's own generator, locked per process only, loses revocations here.)
func TestPostgresConcurrentRevocations(t *testing.T) {
	ctx := context.Background()
	a, b, _ := twoNodes(t)

	const n = 24
	serials := make([]string, n)
	for i := range serials {
		iss, err := client(t, a, a.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "race@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		serials[i] = iss.Serial
	}
	numbers := make(chan int64, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i, s := range serials {
		node := a
		if i%2 == 1 {
			node = b
		}
		wg.Add(1)
		go func(cl *caclient.Client, s string) {
			defer wg.Done()
			rv, err := cl.Revoke(ctx, s, "keyCompromise", "")
			if err != nil {
				errs <- err
				return
			}
			numbers <- rv.CRLNumber
		}(client(t, node, node.AdminCred), s)
	}
	wg.Wait()
	close(numbers)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for num := range numbers {
		if seen[num] {
			t.Errorf("two revocations report CRL number %d: numbers must be unique across nodes", num)
		}
		seen[num] = true
	}
	for name, node := range map[string]*testenv.CA{"A": a, "B": b} {
		crl := fetchCRL(t, node)
		for _, s := range serials {
			if _, ok := crlHas(crl, s); !ok {
				t.Errorf("node %s: CRL %v misses revoked %s", name, crl.Number, s)
			}
		}
	}
}

// TestPostgresRevokeWhileAnotherNodeHoldsTheCRLLock: a third node holds the CRL
// lock row; an admin revokes on node A with a client that gives up after
// 300ms; then the lock is released. The revocation is stored, so node B's CRL
// must list it promptly, not at the next renew_period hours later.
func TestPostgresRevokeWhileAnotherNodeHoldsTheCRLLock(t *testing.T) {
	ctx := context.Background()
	a, b, _, db := twoNodesPG(t, nil)
	iss, err := client(t, a, a.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "dave@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	setLock := func(v string) {
		t.Helper()
		if _, err := db.Exec(`INSERT INTO imapgate_locks (nkey, nvalue) VALUES ($1, $2)
			ON CONFLICT (nkey) DO UPDATE SET nvalue = excluded.nvalue`, []byte("crl"), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	setLock(`{"owner":"node-c","expires":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano) + `"}`)
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = client(t, a, a.AdminCred).Revoke(rctx, iss.Serial, "keyCompromise", "")
	cancel()
	if err == nil {
		t.Fatal("the revocation returned although the CRL lock is held")
	}
	time.Sleep(500 * time.Millisecond)
	setLock(`{"owner":"","expires":"0001-01-01T00:00:00Z"}`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, ok := crlHas(fetchCRL(t, b), iss.Serial); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("10s after the CRL lock was released node B's CRL still misses the revocation")
		}
	}
	// A retry by the admin is a conflict with a sentence, not a second revocation.
	if _, err := client(t, a, a.AdminCred).Revoke(ctx, iss.Serial, "keyCompromise", ""); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("second revoke: %v, want 409", err)
	}
}

// TestPostgresCRLMetadataWriteFails: the small metadata row that lets nodes
// serve their cached CRL cannot be written after a new CRL is stored. No node
// may go on serving its cached, older CRL: they read the stored one until the
// row is written again.
func TestPostgresCRLMetadataWriteFails(t *testing.T) {
	ctx := context.Background()
	a, b, _, db := twoNodesPG(t, func(cfg *ca.Config) { cfg.CRL.CheckInterval = ca.Duration{Duration: 200 * time.Millisecond} })
	iss, err := client(t, a, a.EnrollCred).Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "erin@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	fetchCRL(t, b) // node B now has the current CRL cached
	fetchCRL(t, a)
	if _, err := db.Exec(`CREATE FUNCTION refuse_crl_meta() RETURNS trigger AS $$
		BEGIN
			IF NEW.nkey = convert_to('current', 'UTF8') THEN RAISE EXCEPTION 'test: CRL metadata write refused'; END IF;
			RETURN NEW;
		END $$ LANGUAGE plpgsql;
		CREATE TRIGGER refuse_crl_meta BEFORE INSERT OR UPDATE ON imapgate_crl FOR EACH ROW EXECUTE FUNCTION refuse_crl_meta();`); err != nil {
		t.Fatal(err)
	}
	rv, err := client(t, a, a.AdminCred).Revoke(ctx, iss.Serial, "keyCompromise", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, node := range map[string]*testenv.CA{"A": a, "B": b} {
		crl := fetchCRL(t, node)
		if _, ok := crlHas(crl, iss.Serial); !ok || crl.Number.Int64() != rv.CRLNumber {
			t.Errorf("node %s serves CRL %v (listing the revocation: %v); the stored one is %d", name, crl.Number, ok, rv.CRLNumber)
		}
	}
	// Once the row can be written again, the schedule restores it.
	if _, err := db.Exec(`DROP TRIGGER refuse_crl_meta ON imapgate_crl`); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM imapgate_crl WHERE nkey = convert_to('current', 'UTF8')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the CRL metadata row was not written again within 30s")
		}
	}
	if _, ok := crlHas(fetchCRL(t, b), iss.Serial); !ok {
		t.Error("after the metadata row is back node B's CRL misses the revocation")
	}
}
