package ca

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// auditIndex is what a listing needs to pick entries without reading the
// whole trail: per entry its key, time, serial, user and kind, and per
// serial and per user the same entries. A listing walks it from the newest
// end and reads at most its limit of entries with db.Get, so its cost
// follows the limit (and, filtered, the matches), not the length of the
// trail, which grows without bound.
//
// It is authoritative only while every write of the trail goes through this
// process: a bbolt database, which one process holds (Open fails on a
// locked file). On PostgreSQL other CA nodes write the same table, so there
// is no index and Audit reads the whole table as before.
type auditIndex struct {
	mu sync.RWMutex
	// ents is the listing order reversed (time ascending, key descending
	// among equal times), so that a new entry is appended.
	ents []*auditRef
	// bySerial and byUser are in the same order; entries without a serial
	// or user are in ents only (an empty filter matches all).
	bySerial map[string][]*auditRef
	byUser   map[string][]*auditRef // by foldUser
	// kinds and users intern the strings many entries share.
	kinds, users map[string]string
}

// auditRef is one entry of the index. The time is kept as seconds and
// nanoseconds rather than a time.Time (24 bytes) or UnixNano (which cannot
// hold an entry without a time).
type auditRef struct {
	key, serial, user, kind string
	sec                     int64
	nsec                    int32
}

// cmp orders refs as ents holds them: time ascending, key descending.
func (a *auditRef) cmp(b *auditRef) int {
	if c := cmp.Compare(a.sec, b.sec); c != 0 {
		return c
	}
	if c := cmp.Compare(a.nsec, b.nsec); c != 0 {
		return c
	}
	return strings.Compare(b.key, a.key)
}

func newAuditIndex() *auditIndex {
	return &auditIndex{bySerial: map[string][]*auditRef{}, byUser: map[string][]*auditRef{},
		kinds: map[string]string{}, users: map[string]string{}}
}

// buildAuditIndex reads the trail once, at Open. Entries that do not decode
// are left out, as a listing skips them.
func (c *CA) buildAuditIndex() error {
	start := time.Now()
	list, err := c.db.List(auditTable)
	if err != nil {
		return fmt.Errorf("ca: read audit trail: %w", err)
	}
	ix := newAuditIndex()
	ix.ents = make([]*auditRef, 0, len(list))
	for _, kv := range list {
		var e AuditEntry
		if json.Unmarshal(kv.Value, &e) != nil {
			continue
		}
		ix.ents = append(ix.ents, ix.ref(string(kv.Key), e))
	}
	slices.SortFunc(ix.ents, (*auditRef).cmp)
	for _, r := range ix.ents {
		if r.serial != "" {
			ix.bySerial[r.serial] = append(ix.bySerial[r.serial], r)
		}
		if r.user != "" {
			ix.byUser[r.user] = append(ix.byUser[r.user], r)
		}
	}
	c.auditIx = ix
	// A start slowed by a long trail is explained here.
	c.log.Info("ca: audit index built", "entries", len(ix.ents), "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

func (ix *auditIndex) ref(key string, e AuditEntry) *auditRef {
	return &auditRef{key: key, serial: e.Serial, user: intern(ix.users, foldUser(e.User)), kind: intern(ix.kinds, e.Kind),
		sec: e.Time.Unix(), nsec: int32(e.Time.Nanosecond())}
}

func intern(m map[string]string, s string) string {
	if v, ok := m[s]; ok {
		return v
	}
	m[s] = s
	return s
}

// put records an entry writeAudit has just stored under key. A rewrite (a
// pending entry's outcome, with the serial of an issuance) replaces the
// entry's ref. e is what a listing will read back: writeAudit stores its
// JSON, which decodes to the same serial, user, kind and time.
func (ix *auditIndex) put(key string, e AuditEntry, rewrite bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if rewrite {
		ix.remove(key)
	}
	r := ix.ref(key, e)
	ix.ents = insertSorted(ix.ents, r, (*auditRef).cmp)
	if r.serial != "" {
		ix.bySerial[r.serial] = insertSorted(ix.bySerial[r.serial], r, (*auditRef).cmp)
	}
	if r.user != "" {
		ix.byUser[r.user] = insertSorted(ix.byUser[r.user], r, (*auditRef).cmp)
	}
}

// insertSorted puts r in its place in s, ordered by cmp, looking from the
// end: a new entry or record almost always goes there. The audit and the
// certificate indexes both use it.
func insertSorted[T any](s []*T, r *T, cmp func(a, b *T) int) []*T {
	i := len(s)
	for i > 0 && cmp(s[i-1], r) > 0 {
		i--
	}
	return slices.Insert(s, i, r)
}

// remove takes out the entry under key. It is looked for from the newest
// end: the entry rewritten is the pending one written moments before.
func (ix *auditIndex) remove(key string) {
	i := len(ix.ents) - 1
	for i >= 0 && ix.ents[i].key != key {
		i--
	}
	if i < 0 {
		return
	}
	r := ix.ents[i]
	ix.ents = slices.Delete(ix.ents, i, i+1)
	if s := removeRef(ix.bySerial[r.serial], r); len(s) > 0 {
		ix.bySerial[r.serial] = s
	} else {
		delete(ix.bySerial, r.serial)
	}
	if s := removeRef(ix.byUser[r.user], r); len(s) > 0 {
		ix.byUser[r.user] = s
	} else {
		delete(ix.byUser, r.user)
	}
}

func removeRef(s []*auditRef, r *auditRef) []*auditRef {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == r {
			return slices.Delete(s, i, i+1)
		}
	}
	return s
}

// keys returns the keys of the newest entries matching q (Serial already
// canonical), at most limit of them, newest first.
func (ix *auditIndex) keys(q AuditQuery, limit int) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	cand := ix.ents
	user := ""
	if q.User != "" {
		user = foldUser(q.User)
	}
	switch {
	case q.Serial != "":
		cand = ix.bySerial[q.Serial]
	case q.User != "":
		cand = ix.byUser[user]
	}
	var out []string
	for i := len(cand) - 1; i >= 0 && len(out) < limit; i-- {
		r := cand[i]
		if q.Serial != "" && r.serial != q.Serial || q.User != "" && r.user != user {
			continue
		}
		if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, r.kind) {
			continue
		}
		out = append(out, r.key)
	}
	return out
}

// foldUser maps every user that strings.EqualFold holds equal to one
// string: each rune becomes the smallest of its case-folding orbit (the
// orbits EqualFold compares by), which for ASCII letters is the upper case.
func foldUser(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}
