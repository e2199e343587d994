package ca

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

// slowListDB counts the reads of the whole audit table and holds the
// first one, after it has read, until release is closed.
type slowListDB struct {
	nosql.DB
	lists   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (d *slowListDB) List(bucket []byte) ([]*database.Entry, error) {
	if !bytes.Equal(bucket, auditTable) {
		return d.DB.List(bucket)
	}
	l, err := d.DB.List(bucket)
	if d.lists.Add(1) == 1 {
		close(d.entered)
		<-d.release
	}
	return l, err
}

// TestAuditScanShared: without an index (PostgreSQL), listings that arrive
// while the trail is being read wait for one next read instead of each
// reading it, and that read is as fresh as their own: an entry written
// before a listing arrives is in its result.
func TestAuditScanShared(t *testing.T) {
	c := openTestCA(t, nil)
	c.auditIx = nil
	d := &slowListDB{DB: c.db.DB, entered: make(chan struct{}), release: make(chan struct{})}
	c.db.DB = d
	ctx := context.Background()
	first := make(chan []AuditEntry)
	go func() {
		l, err := c.Audit(AuditQuery{User: "paula@example.org"})
		if err != nil {
			t.Error(err)
		}
		first <- l
	}()
	<-d.entered
	if _, err := c.writeAudit(ctx, "", AuditEntry{Action: "unblock", User: "paula@example.org", Result: resultOK}); err != nil {
		t.Fatal(err)
	}
	const waiting = 10
	var wg sync.WaitGroup
	var later [waiting][]AuditEntry
	for i := range waiting {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.Audit(AuditQuery{User: "PAULA@example.org"})
			if err != nil {
				t.Error(err)
			}
			later[i] = l
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them reach the wait
	close(d.release)
	wg.Wait()
	if l := <-first; len(l) != 0 {
		t.Errorf("the first listing, read before the entry was written: %+v", l)
	}
	for i, l := range later {
		if len(l) != 1 || l[0].Action != "unblock" {
			t.Errorf("listing %d, which came after the entry was written: %+v, want it", i, l)
		}
	}
	if n := d.lists.Load(); n > 3 {
		t.Errorf("%d reads of the trail for %d listings, want 2 (3 if one was slow to start)", n, waiting+1)
	}
}
