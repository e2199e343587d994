package ca

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
)

// auditScans shares the full reads of the trail that listings need where
// there is no index (PostgreSQL, see auditIndex): at most one read runs at
// a time, and every listing that arrives meanwhile waits for the next one,
// which starts after it arrived and so is as fresh as a read of its own.
// However many listings an agent sends at once, the CA reads and holds the
// trail once, on one core, and enrollments and revocations go on beside it.
type auditScans struct {
	mu      sync.Mutex
	running bool
	next    *auditScan // the read the listings arriving now wait for
}

type auditScan struct {
	done chan struct{}
	ents []AuditEntry // every entry that decodes, newest first
	err  error
}

// all returns the whole trail, newest first, from a read started after the call.
func (s *auditScans) all(c *CA) ([]AuditEntry, error) {
	s.mu.Lock()
	sc := s.next
	if sc == nil {
		sc = &auditScan{done: make(chan struct{})}
		s.next = sc
		if !s.running {
			s.running = true
			go s.run(c)
		}
	}
	s.mu.Unlock()
	<-sc.done
	return sc.ents, sc.err
}

func (s *auditScans) run(c *CA) {
	for {
		s.mu.Lock()
		sc := s.next
		s.next = nil
		if sc == nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		sc.ents, sc.err = readShared(c)
		close(sc.done)
	}
}

// readShared is readAuditTrail in the reading goroutine, where a panic
// would end the CA rather than one request (as net/http recovers it) and
// leave the listings waiting: it becomes their error.
func readShared(c *CA) (ents []AuditEntry, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ca: read audit trail: panic: %v", p)
		}
	}()
	return c.readAuditTrail()
}

// readAuditTrail reads and decodes the whole table, skipping entries that
// do not decode, newest first.
func (c *CA) readAuditTrail() ([]AuditEntry, error) {
	list, err := c.db.List(auditTable)
	if err != nil {
		return nil, fmt.Errorf("ca: read audit trail: %w", err)
	}
	out := make([]AuditEntry, 0, len(list))
	for _, kv := range list {
		var e AuditEntry
		if json.Unmarshal(kv.Value, &e) == nil {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}
