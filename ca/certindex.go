package ca

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// certIndex is what a certificate search needs to pick records without
// reading them all: per record its key (the decimal serial), issuance time,
// user and kind, in the listing's order, and per user the same records. A
// page walks it from its cursor and reads only the records it returns, so
// its cost follows the limit (and, by user, that user's records), not the
// number of certificates ever issued.
//
// Like auditIndex it exists only on bbolt, where this process makes every
// write; on PostgreSQL other CA nodes issue too, and a search reads the
// table.
type certIndex struct {
	mu sync.RWMutex
	// ents is the listing order reversed (issued ascending, serial
	// ascending among equal times), so that a new record is appended.
	ents []*certRef
	// byUser is in the same order; records without a user (role, server)
	// are in ents only.
	byUser map[string][]*certRef // by foldUser
	byKey  map[string]*certRef
	// kinds and users intern the strings many records share.
	kinds, users map[string]string
}

// certRef is one record of the index, and also a page's position (a cursor
// names the last record a page returned).
type certRef struct {
	key, user, kind string
	sec             int64
	nsec            int32
}

// cmpCertRef orders refs as ents holds them. Keys are decimal serials
// without leading zeros, so the longer is the larger.
func cmpCertRef(a, b *certRef) int {
	if c := cmp.Compare(a.sec, b.sec); c != 0 {
		return c
	}
	if c := cmp.Compare(a.nsec, b.nsec); c != 0 {
		return c
	}
	if c := cmp.Compare(len(a.key), len(b.key)); c != 0 {
		return c
	}
	return strings.Compare(a.key, b.key)
}

func newCertIndex() *certIndex {
	return &certIndex{byUser: map[string][]*certRef{}, byKey: map[string]*certRef{},
		kinds: map[string]string{}, users: map[string]string{}}
}

// buildCertIndex reads the records once, at Open. Records that do not
// decode are left out, as a search skips them.
func (c *CA) buildCertIndex() error {
	start := time.Now()
	list, err := c.db.List(certsTable)
	if err != nil {
		return fmt.Errorf("ca: read certificate records: %w", err)
	}
	ix := newCertIndex()
	ix.ents = make([]*certRef, 0, len(list))
	for _, kv := range list {
		var r Record
		if json.Unmarshal(kv.Value, &r) != nil {
			continue
		}
		ref := ix.ref(string(kv.Key), r)
		ix.ents = append(ix.ents, ref)
		ix.byKey[ref.key] = ref
	}
	slices.SortFunc(ix.ents, cmpCertRef)
	for _, r := range ix.ents {
		if r.user != "" {
			ix.byUser[r.user] = append(ix.byUser[r.user], r)
		}
	}
	c.certIx = ix
	c.log.Info("ca: certificate index built", "records", len(ix.ents), "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

func (ix *certIndex) ref(key string, r Record) *certRef {
	return &certRef{key: key, user: intern(ix.users, foldUser(r.Identity)), kind: intern(ix.kinds, KindOf(r)),
		sec: r.IssuedAt.Unix(), nsec: int32(r.IssuedAt.Nanosecond())}
}

// put records a record putRecord has just stored under key, replacing the
// one stored under it before.
func (ix *certIndex) put(key string, r Record) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.remove(key)
	ref := ix.ref(key, r)
	ix.byKey[key] = ref
	ix.ents = insertSorted(ix.ents, ref, cmpCertRef)
	if ref.user != "" {
		ix.byUser[ref.user] = insertSorted(ix.byUser[ref.user], ref, cmpCertRef)
	}
}

// del takes out the record under key (an issuance taken back).
func (ix *certIndex) del(key string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.remove(key)
}

func (ix *certIndex) remove(key string) {
	ref, ok := ix.byKey[key]
	if !ok {
		return
	}
	delete(ix.byKey, key)
	ix.ents = removeCertRef(ix.ents, ref)
	if ref.user == "" {
		return
	}
	if s := removeCertRef(ix.byUser[ref.user], ref); len(s) > 0 {
		ix.byUser[ref.user] = s
	} else {
		delete(ix.byUser, ref.user)
	}
}

func removeCertRef(s []*certRef, r *certRef) []*certRef {
	i, ok := slices.BinarySearchFunc(s, r, cmpCertRef)
	if ok && s[i] == r {
		return slices.Delete(s, i, i+1)
	}
	return s
}

// page returns the records that match q (its user and kinds) after the
// position before (nil: from the newest), newest first, at most limit of
// them, and whether more match after those.
func (ix *certIndex) page(q CertQuery, before *certRef, limit int) ([]certRef, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	cand := ix.ents
	user := ""
	if q.User != "" {
		user = foldUser(q.User)
		cand = ix.byUser[user]
	}
	end := len(cand)
	if before != nil {
		// The first position at or past the cursor; the cursor's own record
		// was on the page before.
		end, _ = slices.BinarySearchFunc(cand, before, cmpCertRef)
	}
	var out []certRef
	for i := end - 1; i >= 0; i-- {
		r := cand[i]
		if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, r.kind) {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, *r)
	}
	return out, false
}
