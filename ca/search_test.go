package ca_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/ca"
	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/testenv"
)

// TestCertSearch: GET /api/v1/certs?user=&serial= finds certificates with
// their status, revocation time and reason and not_after, as the help desk
// UI reads them; an agent finds no role certificate even by its serial.
func TestCertSearch(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	var serials []string
	for range 2 {
		r, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "lisa@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, r.Serial)
	}
	if _, err := admin.Revoke(ctx, serials[0], "keyCompromise", "card lost"); err != nil {
		t.Fatal(err)
	}
	byUser, err := enroll.Search(ctx, caclient.CertQuery{User: "LISA@example.org"})
	if err != nil || len(byUser) != 2 {
		t.Fatalf("by user: %d certificates, %v", len(byUser), err)
	}
	got, err := enroll.Search(ctx, caclient.CertQuery{Serial: serials[0]})
	if err != nil || len(got) != 1 {
		t.Fatalf("by serial: %+v, %v", got, err)
	}
	if g := got[0]; g.Status != "revoked" || g.RevokedAt == nil || g.ReasonCode != 1 || g.Reason != "keyCompromise: card lost" ||
		g.NotAfter.Before(time.Now().Add(300*24*time.Hour)) || g.Kind != "user" {
		t.Errorf("revoked certificate: %+v", g)
	}
	if got, _ := enroll.Search(ctx, caclient.CertQuery{Serial: serials[1], User: "lisa@example.org"}); len(got) != 1 || got[0].Status != "valid" || got[0].RevokedAt != nil {
		t.Errorf("valid certificate: %+v", got)
	}
	// The agent's own credential: an admin finds it, the agent does not.
	agentSerial := ""
	all, _ := admin.List(ctx, "")
	for _, x := range all {
		if x.Role == "enroll" {
			agentSerial = x.Serial
		}
	}
	if got, _ := admin.Search(ctx, caclient.CertQuery{Serial: agentSerial}); len(got) != 1 {
		t.Errorf("admin search for the agent's serial: %+v", got)
	}
	if got, _ := enroll.Search(ctx, caclient.CertQuery{Serial: agentSerial}); len(got) != 0 {
		t.Errorf("an agent found a role certificate by serial: %+v", got)
	}
	if got, err := enroll.Search(ctx, caclient.CertQuery{Serial: serials[1], User: "bart@example.org"}); err != nil || len(got) != 0 {
		t.Errorf("a serial under another user: %+v, %v", got, err)
	}
	if got, err := enroll.Search(ctx, caclient.CertQuery{Serial: "0A1B2C3D4E5F"}); err != nil || len(got) != 0 {
		t.Errorf("an unknown serial: %+v, %v", got, err)
	}
	var ae *caclient.Error
	if _, err := enroll.Search(ctx, caclient.CertQuery{Serial: "not-hex"}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("bad serial: %v, want 400", err)
	}
	// The JSON itself carries every field, revoked_at null when valid.
	resp, err := rawClient(t, c, loadCred(t, c.EnrollCred)).Get(c.URL + ca.PathCerts + "?serial=" + serials[1])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var raw struct {
		Certs []map[string]any `json:"certs"`
	}
	if err := json.Unmarshal(b, &raw); err != nil || len(raw.Certs) != 1 {
		t.Fatalf("raw answer %s: %v", b, err)
	}
	for _, k := range []string{"status", "revoked_at", "reason", "not_after", "kind"} {
		if _, ok := raw.Certs[0][k]; !ok {
			t.Errorf("certificate JSON lacks %q: %s", k, b)
		}
	}
}

func loadCred(t testing.TB, dir string) *tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// TestCertSearchPages: GET /api/v1/certs answers in pages (limit=, next,
// before=) that together hold every match once, newest first; kind= narrows
// an admin's search but never widens an agent's; a bad limit, kind or
// cursor is a 400 that says what to do.
func TestCertSearchPages(t *testing.T) {
	c := testenv.StartCA(t)
	ctx := context.Background()
	enroll, admin := client(t, c, c.EnrollCred), client(t, c, c.AdminCred)
	var issued []string
	for range 5 {
		r, err := enroll.Sign(ctx, caclient.SignRequest{CSR: csrPEM(t, ecKey(t), csrOpts{}), User: "paula@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		issued = append([]string{r.Serial}, issued...) // newest first
	}
	var got []string
	q := caclient.CertQuery{User: "paula@example.org", Limit: 2}
	for pages := 1; ; pages++ {
		p, err := enroll.SearchPage(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(2, 5-len(got)); len(p.Certs) != want {
			t.Fatalf("page %d: %d certificates, want %d", pages, len(p.Certs), want)
		}
		for _, x := range p.Certs {
			got = append(got, x.Serial)
		}
		if p.Next == "" {
			if pages != 3 {
				t.Errorf("%d pages, want 3", pages)
			}
			break
		}
		q.Before = p.Next
	}
	if fmt.Sprint(got) != fmt.Sprint(issued) {
		t.Errorf("pages hold %v, want %v (newest first)", got, issued)
	}
	if all, err := enroll.Search(ctx, caclient.CertQuery{User: "paula@example.org"}); err != nil || len(all) != 5 {
		t.Errorf("Search reads every page: %d, %v", len(all), err)
	}

	// kind=: an admin's narrows; an agent's asks for role certificates in vain.
	roles, err := admin.Search(ctx, caclient.CertQuery{Kinds: []string{"role"}})
	if err != nil || len(roles) == 0 {
		t.Fatalf("admin, kind=role: %d, %v", len(roles), err)
	}
	for _, x := range roles {
		if x.Kind != "role" {
			t.Errorf("admin, kind=role, got a %s certificate", x.Kind)
		}
	}
	agentSees, err := enroll.Search(ctx, caclient.CertQuery{Kinds: []string{"role", "server"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range agentSees {
		if x.Kind != "user" {
			t.Errorf("an agent asking for kind=role got a %s certificate", x.Kind)
		}
	}

	hc := rawClient(t, c, loadCred(t, c.EnrollCred))
	for _, tc := range []struct{ query, want string }{
		{"limit=0", "give a number from 1 to 1000"},
		{"limit=1001", "give a number from 1 to 1000"},
		{"limit=ten", "give a number from 1 to 1000"},
		{"kind=admin", "give one of user, role"},
		{"before=bm90LWEtY3Vyc29y", "start the search again without before="},
		{"before=" + strings.Repeat("A", 500), "start the search again without before="},
	} {
		resp, err := hc.Get(c.URL + ca.PathCerts + "?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s, want 400 saying %q", tc.query, resp.StatusCode, b, tc.want)
		}
	}
}
