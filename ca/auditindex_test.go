package ca

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// loadTrail writes testdata/audit/good_trail.json straight into the audit
// table (old-format, corrupt and timeless entries, equal times, users
// differing in case) and indexes it as Open would.
func loadTrail(t *testing.T, c *CA) {
	t.Helper()
	b, err := os.ReadFile("testdata/audit/good_trail.json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		v := []byte(r.Value)
		var s string
		if json.Unmarshal(r.Value, &s) == nil {
			v = []byte(s) // a corrupt entry, stored as the bytes of the string
		}
		if err := c.db.Set(auditTable, []byte(r.Key), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.buildAuditIndex(); err != nil {
		t.Fatal(err)
	}
}

// fullScan is Audit as it was before the index: the whole table read,
// decoded and sorted. It is the reference the index must agree with.
func fullScan(t *testing.T, c *CA, q AuditQuery) []AuditEntry {
	t.Helper()
	ix := c.auditIx
	c.auditIx = nil
	defer func() { c.auditIx = ix }()
	out, err := c.Audit(q)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameEntries(t *testing.T, what string, got, want []AuditEntry) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// TestAuditIndexMatchesFullScan: for every mix of filters and limits, the
// index returns what reading the whole trail returns — over old-format
// entries, corrupt ones (skipped), entries without a time, equal times and
// users differing in case (also by Unicode folding: K is KELVIN SIGN), and
// over entries written through writeAudit after the index was built.
func TestAuditIndexMatchesFullScan(t *testing.T) {
	c := openTestCA(t, nil)
	loadTrail(t, c)
	ctx := context.Background()
	users := []string{"alice@example.org", "bob@example.org", "kim@example.org", "desk one", ""}
	kinds := []string{KindUser, KindRole, KindServer, ""}
	for i := range 60 {
		e := AuditEntry{Action: "issue", Kind: kinds[i%len(kinds)], User: users[i%len(users)], Result: resultOK}
		if i%3 == 0 {
			e.Serial = fmt.Sprintf("0C%02X", i%7)
		}
		if _, err := c.writeAudit(ctx, "", e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Report(ctx, ReportRequest{Action: "unblock", User: "ALICE@example.org", Serial: "0b01"}, Requester{Subject: "CN=desk one", Role: RoleEnroll}); err != nil {
		t.Fatal(err)
	}

	serials := []string{"", "0A1B2C", "a1b2c", "0x0A1B2D", "0B01", "0B02", "0C00", "0C03", "0C05", "FFFF"}
	queryUsers := []string{"", "alice@example.org", "ALICE@EXAMPLE.ORG", "bob@example.org", "kim@example.org", "KIM@example.org", "desk one", "Desk One", "imap.example.org", "nobody@example.org"}
	queryKinds := [][]string{nil, userKinds, {KindRole, KindServer}, {""}}
	limits := []int{0, 1, 3, 1000}
	n := 0
	for _, s := range serials {
		for _, u := range queryUsers {
			for _, k := range queryKinds {
				for _, l := range limits {
					q := AuditQuery{Serial: s, User: u, Kinds: k, Limit: l}
					got, err := c.Audit(q)
					if err != nil {
						t.Fatalf("%+v: %v", q, err)
					}
					want := fullScan(t, c, q)
					sameEntries(t, fmt.Sprintf("%+v", q), got, want)
					if len(want) > 0 {
						n++
					}
				}
			}
		}
	}
	if n < 100 {
		t.Errorf("only %d queries found entries: the comparison proves little", n)
	}
	old, _ := c.Audit(AuditQuery{Serial: "0A1B2C", User: "BOB@example.org"})
	if len(old) != 2 || old[0].Action != "revoke" || old[0].Actor != "CN=old admin" || old[0].Result != resultOK {
		t.Errorf("old-format entries for bob: %+v, want the revocation then the issuance, read as ok", old)
	}
	kelvin, _ := c.Audit(AuditQuery{Serial: "0B02", User: "kim@example.org"})
	if len(kelvin) != 1 {
		t.Errorf("the entry whose user is spelt with KELVIN SIGN: %+v, want it found as kim@example.org (strings.EqualFold)", kelvin)
	}
}

// TestAuditIndexPendingOutcome: an operation's pending entry, rewritten with
// its outcome (and, for an issuance, the serial), is listed once, with the
// outcome, under its serial too; one left pending stays listed as pending.
func TestAuditIndexPendingOutcome(t *testing.T) {
	c := openTestCA(t, nil)
	ctx := context.Background()
	by := Requester{Subject: "CN=desk one", Role: RoleEnroll}
	p, err := c.beginAudit(ctx, AuditEntry{Action: "issue", Kind: KindUser, User: "nora@example.org"}, by)
	if err != nil {
		t.Fatal(err)
	}
	// This one is left pending, as by a CA stopped before the outcome.
	if _, err := c.beginAudit(ctx, AuditEntry{Action: "issue", Kind: KindUser, User: "nora@example.org"}, by); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Audit(AuditQuery{User: "nora@example.org"}); len(got) != 2 || got[0].Result != resultPending || got[1].Result != resultPending {
		t.Fatalf("before the outcome: %+v, want two pending entries", got)
	}
	if err := p.finish(ctx, "0D01", resultOK, ""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		q    AuditQuery
		want []string // results, newest first
	}{
		{"by user", AuditQuery{User: "Nora@example.org"}, []string{resultPending, resultOK}},
		{"by serial", AuditQuery{Serial: "0d01"}, []string{resultOK}},
		{"newest two", AuditQuery{Limit: 2}, []string{resultPending, resultOK}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Audit(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var res []string
			for _, e := range got {
				res = append(res, e.Result)
			}
			if fmt.Sprint(res) != fmt.Sprint(tt.want) {
				t.Errorf("results %v, want %v", res, tt.want)
			}
			sameEntries(t, "against the full scan", got, fullScan(t, c, tt.q))
		})
	}
	done, _ := c.Audit(AuditQuery{Serial: "0D01"})
	if len(done) == 1 && !done[0].Time.Equal(p.entry.Time) {
		t.Errorf("the outcome's time %v, want the pending entry's %v (same key, same time)", done[0].Time, p.entry.Time)
	}

	// Through a real issuance: one entry for the serial, ok.
	iss, err := c.Sign(ctx, SignRequest{CSR: benchCSR(t), Identity: "omar@example.org"}, by)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Audit(AuditQuery{Serial: iss.Record.Serial}); len(got) != 1 || got[0].Result != resultOK || got[0].Action != "issue" {
		t.Errorf("the issuance's entries: %+v, want one, ok", got)
	}
}

// TestAuditIndexLimit: 0 means the newest 100, a limit returns the newest
// that many, and none returns more than MaxAuditLimit.
func TestAuditIndexLimit(t *testing.T) {
	c := openTestCA(t, nil)
	fillAudit(t, c, MaxAuditLimit+50)
	for _, tt := range []struct{ limit, want int }{{0, 100}, {1, 1}, {250, 250}, {MaxAuditLimit, MaxAuditLimit}, {5000, MaxAuditLimit}} {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			q := AuditQuery{Limit: tt.limit}
			got, err := c.Audit(q)
			if err != nil || len(got) != tt.want {
				t.Fatalf("%d entries (%v), want %d", len(got), err, tt.want)
			}
			sameEntries(t, "against the full scan", got, fullScan(t, c, q))
		})
	}
}

// TestAuditIndexConcurrent: listings while entries are written (run with
// -race); every entry written is listed at the end.
func TestAuditIndexConcurrent(t *testing.T) {
	c := openTestCA(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 10 {
				if _, err := c.writeAudit(ctx, "", AuditEntry{Action: "report", User: fmt.Sprintf("w%d@example.org", w), Serial: fmt.Sprintf("0E%02X", i), Result: resultOK}); err != nil {
					t.Error(err)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := c.Audit(AuditQuery{User: fmt.Sprintf("w%d@example.org", w)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got, err := c.Audit(AuditQuery{Limit: MaxAuditLimit, Kinds: []string{""}})
	if err != nil || len(got) != 40 {
		t.Fatalf("%d entries (%v), want the 40 written", len(got), err)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Time.After(got[i-1].Time) {
			t.Fatalf("entry %d (%v) is newer than entry %d (%v)", i, got[i].Time, i-1, got[i-1].Time)
		}
	}
	sameEntries(t, "against the full scan", got, fullScan(t, c, AuditQuery{Limit: MaxAuditLimit, Kinds: []string{""}}))
}

// FuzzFoldUser: the index's user key holds two users equal exactly when
// strings.EqualFold, which the full scan used, does.
func FuzzFoldUser(f *testing.F) {
	for _, s := range [][2]string{
		{"kim@example.org", "\u212aim@example.org"}, {"Alice@Example.org", "alice@EXAMPLE.org"},
		{"straße", "STRASSE"}, {"σ", "ς"}, {"\xff", "\ufffd"}, {"\xff\xfe", "\ufffd"}, {"", ""}, {"ǅ", "ǆ"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		// b is rarely a's equal by chance: a with every rune moved along
		// its folding orbit is.
		for _, b := range []string{b, strings.Map(unicode.SimpleFold, a)} {
			if got, want := foldUser(a) == foldUser(b), strings.EqualFold(a, b); got != want {
				t.Errorf("foldUser(%q) == foldUser(%q) is %v, strings.EqualFold %v", a, b, got, want)
			}
		}
	})
}
