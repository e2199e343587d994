package ca

import (
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/db"
)

// loadRecords stores n records straight into the tables — equal issuance
// times, users differing in case, every kind, a record without a time, one
// that does not decode, every seventh revoked — and indexes them as Open
// would.
func loadRecords(t testing.TB, c *CA, n int) {
	t.Helper()
	users := []string{"alice@example.org", "ALICE@example.org", "bob@example.org", "kim@example.org", ""}
	kinds := []string{KindUser, KindUser, KindRole, KindServer, KindUser, ""}
	base := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	for i := range n {
		sn := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(0x5b), 120), big.NewInt(int64(i*37%n)))
		r := Record{Serial: SerialHex(sn), Identity: users[i%len(users)], Kind: kinds[i%len(kinds)],
			NotAfter: base.Add(time.Duration(i%3) * 24 * time.Hour * 400),
			// Groups of three share a time, to the nanosecond.
			IssuedAt: base.Add(time.Duration(i/3) * time.Minute)}
		if i == 5 {
			r.IssuedAt = time.Time{}
		}
		v, _ := json.Marshal(r)
		if i == 9 {
			v = []byte("{not json")
		}
		if err := c.db.Set(certsTable, []byte(sn.String()), v); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			rv, _ := json.Marshal(db.RevokedCertificateInfo{Serial: sn.String(), ReasonCode: 1, Reason: "keyCompromise", RevokedAt: base})
			if err := c.db.Set(revokedTable, []byte(sn.String()), rv); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.buildCertIndex(); err != nil {
		t.Fatal(err)
	}
}

// walk reads every page of q and returns the certificates in order.
func walk(t *testing.T, c *CA, q CertQuery) []CertStatus {
	t.Helper()
	var out []CertStatus
	for pages := 0; ; pages++ {
		p, err := c.SearchPage(q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if p.Next != "" && len(p.Certs) == 0 {
			t.Fatalf("%+v: an empty page with a next", q)
		}
		out = append(out, p.Certs...)
		if p.Next == "" {
			return out
		}
		if p.Next == q.Before || pages > 10_000 {
			t.Fatalf("%+v: the cursor does not move", q)
		}
		q.Before = p.Next
	}
}

func serials(list []CertStatus) string {
	s := make([]string, len(list))
	for i, c := range list {
		s[i] = c.Serial + "/" + c.Status
	}
	return strings.Join(s, " ")
}

// TestCertIndexMatchesScan: page by page, with every mix of filters and
// page sizes, the index returns what reading every record returns (the
// PostgreSQL path) — newest first, equal times by serial, no certificate
// twice or left out — also for records issued and taken back after the
// index was built.
func TestCertIndexMatchesScan(t *testing.T) {
	c := openTestCA(t, nil)
	loadRecords(t, c, 200)
	// After the build: a new record, one rewritten (a new time), one taken back.
	late := Record{Serial: SerialHex(big.NewInt(77)), Identity: "kim@example.org", Kind: KindUser, IssuedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Now().Add(time.Hour)}
	if err := c.putRecord(late); err != nil {
		t.Fatal(err)
	}
	late.IssuedAt = late.IssuedAt.Add(-90 * 24 * time.Hour)
	if err := c.putRecord(late); err != nil {
		t.Fatal(err)
	}
	gone := Record{Serial: SerialHex(big.NewInt(78)), Identity: "kim@example.org", Kind: KindUser, IssuedAt: time.Now()}
	if err := c.putRecord(gone); err != nil {
		t.Fatal(err)
	}
	if err := c.db.Del(certsTable, []byte("78")); err != nil {
		t.Fatal(err)
	}
	c.certIx.del("78")

	ix := c.certIx
	for _, user := range []string{"", "alice@example.org", "Kim@Example.org", "nobody@example.org"} {
		for _, kinds := range [][]string{nil, {KindUser}, {KindRole, KindServer}} {
			q := CertQuery{User: user, Kinds: kinds}
			c.certIx = nil
			want := walk(t, c, CertQuery{User: user, Kinds: kinds, Limit: MaxCertLimit})
			c.certIx = ix
			for _, limit := range []int{1, 2, 3, 7, 100, 0} {
				q.Limit = limit
				if got := walk(t, c, q); serials(got) != serials(want) {
					t.Errorf("user %q kinds %v limit %d:\n got %s\nwant %s", user, kinds, limit, serials(got), serials(want))
				}
				c.certIx = nil
				if got := walk(t, c, q); serials(got) != serials(want) {
					t.Errorf("scan, user %q kinds %v limit %d:\n got %s\nwant %s", user, kinds, limit, serials(got), serials(want))
				}
				c.certIx = ix
			}
			for i := 1; i < len(want); i++ {
				if want[i].IssuedAt.After(want[i-1].IssuedAt) {
					t.Fatalf("user %q: not newest first at %d", user, i)
				}
			}
			if user == "alice@example.org" && kinds == nil && len(want) != 80 {
				t.Errorf("alice (either case): %d certificates, want 80", len(want))
			}
		}
	}
	// A space either side, as other serials end in the same digits.
	all := " " + serials(walk(t, c, CertQuery{}))
	if strings.Contains(all, " "+SerialHex(big.NewInt(78))+"/") {
		t.Errorf("a record taken back is still found")
	}
	if n := strings.Count(all, " "+SerialHex(big.NewInt(77))+"/"); n != 1 {
		t.Errorf("a rewritten record is found %d times", n)
	}
}

// TestCertPageLimits: the default and the largest page, a cursor from a
// page with a serial filter, and cursors that are not the CA's.
func TestCertPageLimits(t *testing.T) {
	c := openTestCA(t, nil)
	loadRecords(t, c, 1200)
	for _, tc := range []struct {
		limit, want int
	}{{0, DefaultCertLimit}, {-1, DefaultCertLimit}, {5000, MaxCertLimit}, {1, 1}} {
		p, err := c.SearchPage(CertQuery{Limit: tc.limit})
		if err != nil || len(p.Certs) != tc.want || p.Next == "" {
			t.Errorf("limit %d: %d certificates, next %q, %v; want %d and a next", tc.limit, len(p.Certs), p.Next, err, tc.want)
		}
	}
	first, _ := c.SearchPage(CertQuery{Limit: 1})
	if p, err := c.SearchPage(CertQuery{Serial: first.Certs[0].Serial, Before: first.Next}); err != nil || len(p.Certs) != 0 || p.Next != "" {
		t.Errorf("a serial's page after a cursor: %+v, %v", p, err)
	}
	for _, bad := range []string{"x", "YzIuMS4xLjE" /* c2.1.1.1 */, "YzEuKzEuMS4x" /* c1.+1.1.1 */, cursorOf(certRef{key: "012", sec: 1}), "Yz" + strings.Repeat("A", 200),
		cursorOf(certRef{key: "12", sec: 1, nsec: -1}), cursorOf(certRef{key: "12", sec: 1}) + "="} {
		if _, err := c.SearchPage(CertQuery{Before: bad}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("cursor %q: %v, want a bad request", bad, err)
		}
	}
	if _, err := parseCursor(first.Next); err != nil {
		t.Errorf("the CA's own cursor: %v", err)
	}
}

// FuzzCertCursor: parseCursor takes anything without panicking, and what
// it takes is exactly what cursorOf writes for the position it read.
func FuzzCertCursor(f *testing.F) {
	f.Add(cursorOf(certRef{key: "12345678901234567890", sec: 1764578400, nsec: 123}))
	f.Add(cursorOf(certRef{key: "1", sec: time.Time{}.Unix()}))
	f.Add("YzEuMS4xLjE")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := parseCursor(s)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("%q: %v is not a bad request", s, err)
			}
			return
		}
		if back := cursorOf(*ref); back != s {
			t.Fatalf("%q read as %+v, written back as %q", s, ref, back)
		}
	})
}
