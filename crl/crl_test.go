package crl_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

func TestParse(t *testing.T) {
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	now := time.Now()
	pki.Revoke(big.NewInt(4242))
	good := pki.CRL(t, testenv.CRLOptions{})
	strangerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		data []byte
		want string // "" = ok
	}{
		{"good_der", good, ""},
		{"good_pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: good}), ""},
		{"wrong_pem_type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good}), "want \"X509 CRL\""},
		{"garbage", []byte("not a crl"), "crl: parse"},
		{"other_issuer", other.CRL(t, testenv.CRLOptions{}), "does not match issuer"}, // same names, other key
		{"bad_signature", pki.CRL(t, testenv.CRLOptions{Signer: strangerKey}), "does not verify"},
		{"future", pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(time.Hour), NextUpdate: now.Add(2 * time.Hour)}), "in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := crl.Parse(tc.data, pki.Intermediate, now)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !snap.Revoked(big.NewInt(4242)) || snap.Revoked(big.NewInt(4243)) || snap.Len() != 1 {
					t.Fatalf("revoked set wrong: len %d", snap.Len())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestStale(t *testing.T) {
	pki := testenv.NewPKI(t)
	now := time.Now()
	snap, err := crl.Parse(pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(-time.Hour)}), pki.Intermediate, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Stale(now, 2*time.Hour); err != nil {
		t.Fatalf("within grace: %v", err)
	}
	if err := snap.Stale(now, 30*time.Minute); !errors.Is(err, crl.ErrStale) {
		t.Fatalf("past grace: %v", err)
	}
	var none *crl.Snapshot
	if err := none.Stale(now, time.Hour); !errors.Is(err, crl.ErrStale) {
		t.Fatal("no snapshot must be stale")
	}
}

// TestStoreHTTP polls a CA-like /crl with ETags: 304s keep the snapshot, a new CRL
// replaces it and notifies subscribers, a rolled-back CRL number is refused.
func TestStoreHTTP(t *testing.T) {
	pki := testenv.NewPKI(t)
	var mu sync.Mutex
	cur := pki.CRL(t, testenv.CRLOptions{})
	etag := `"1"`
	var hits, notModified atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits.Add(1)
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(cur)
	}))
	defer srv.Close()
	set := func(der []byte, tag string) {
		mu.Lock()
		cur, etag = der, tag
		mu.Unlock()
	}

	store, err := crl.NewStore(crl.Options{URL: srv.URL + "/crl", Issuer: pki.Intermediate, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Fresh(time.Now()); !errors.Is(err, crl.ErrStale) {
		t.Fatalf("fresh before any load: %v", err)
	}
	var got []*crl.Snapshot
	store.Subscribe(func(s *crl.Snapshot) { got = append(got, s) })
	ctx := context.Background()
	if changed, err := store.Refresh(ctx); err != nil || !changed {
		t.Fatalf("first refresh: %v %v", changed, err)
	}
	if changed, err := store.Refresh(ctx); err != nil || changed || notModified.Load() != 1 {
		t.Fatalf("second refresh: changed=%v err=%v 304s=%d", changed, err, notModified.Load())
	}
	pki.Revoke(big.NewInt(77))
	set(pki.CRL(t, testenv.CRLOptions{}), `"2"`)
	if changed, err := store.Refresh(ctx); err != nil || !changed {
		t.Fatalf("third refresh: %v %v", changed, err)
	}
	if len(got) != 2 || !got[1].Revoked(big.NewInt(77)) || store.Load() != got[1] {
		t.Fatalf("subscribers saw %d snapshots", len(got))
	}
	if _, err := store.Fresh(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Fresh(time.Now().Add(2 * time.Hour)); !errors.Is(err, crl.ErrStale) {
		t.Fatalf("max_age not enforced: %v", err)
	}
	// An old CRL (lower number) served again is refused; the current one stays.
	set(pki.CRL(t, testenv.CRLOptions{Number: big.NewInt(1)}), `"old"`)
	if _, err := store.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "older than the current") {
		t.Fatalf("rollback: %v", err)
	}
	if !store.Load().Revoked(big.NewInt(77)) {
		t.Fatal("rollback replaced the snapshot")
	}
	// Server errors keep the snapshot.
	srv.Close()
	if _, err := store.Refresh(ctx); err == nil {
		t.Fatal("refresh against a closed server succeeded")
	}
	if !store.Load().Revoked(big.NewInt(77)) {
		t.Fatal("error replaced the snapshot")
	}
}

func TestStoreFileAndRun(t *testing.T) {
	pki := testenv.NewPKI(t)
	path := filepath.Join(t.TempDir(), "ca.crl")
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan *crl.Snapshot, 4)
	store.Subscribe(func(s *crl.Snapshot) { updates <- s })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { store.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-updates
	pki.Revoke(big.NewInt(99))
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
	select {
	case s := <-updates:
		if !s.Revoked(big.NewInt(99)) {
			t.Fatal("new CRL lacks the revocation")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("file change not picked up")
	}
}

func TestNewStoreValidation(t *testing.T) {
	_, err := crl.NewStore(crl.Options{URL: "ftp://x", File: "/y", Interval: -1})
	for _, want := range []string{"exactly one of url and file", "want http(s)", "no issuer", "must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// BenchmarkParse100k: verifying and indexing a CRL of 100,000 entries (a reload).
func BenchmarkParse100k(b *testing.B) {
	pki := testenv.NewPKI(b)
	der := pki.CRL(b, testenv.CRLOptions{Extra: 100_000})
	b.SetBytes(int64(len(der)))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := crl.Parse(der, pki.Intermediate, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/reload")
	b.ReportMetric(float64(len(der))/1e6, "MB-DER")
}

// TestParseExtensions: a CRL is taken only when it is a complete CRL of its issuer in a
// form the front understands. Delta CRLs, partitioned or indirect CRLs, and unknown
// critical extensions (in the CRL or in an entry) are refused, since a snapshot replaces
// the previous one and would un-revoke whatever such a CRL leaves out.
func TestParseExtensions(t *testing.T) {
	pki := testenv.NewPKI(t)
	now := time.Now()
	mustMarshal := func(v any) []byte {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	uri := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte("https://ca.example.org:8443/crl")}
	// The IssuingDistributionPoint as ca/crl.go writes it, and variants that narrow it.
	type dpName struct {
		FullName []asn1.RawValue `asn1:"optional,tag:0"`
	}
	type dpRelative struct {
		Relative asn1.RawValue `asn1:"optional,tag:1"`
	}
	type idpPlain struct {
		DistributionPoint dpName `asn1:"optional,tag:0"`
	}
	type idpUserCerts struct {
		DistributionPoint dpName `asn1:"optional,tag:0"`
		OnlyUser          bool   `asn1:"optional,tag:1"`
	}
	type idpSomeReasons struct {
		DistributionPoint dpName         `asn1:"optional,tag:0"`
		OnlySomeReasons   asn1.BitString `asn1:"optional,tag:3"`
	}
	type idpIndirect struct {
		DistributionPoint dpName `asn1:"optional,tag:0"`
		Indirect          bool   `asn1:"optional,tag:4"`
	}
	type idpRelative struct {
		DistributionPoint dpRelative `asn1:"optional,tag:0"`
	}
	type idpOnlyCA struct {
		OnlyCA bool `asn1:"optional,tag:2"`
	}
	oidIDP := asn1.ObjectIdentifier{2, 5, 29, 28}
	idp := func(critical bool, v any) pkix.Extension {
		return pkix.Extension{Id: oidIDP, Critical: critical, Value: mustMarshal(v)}
	}
	plain := idpPlain{DistributionPoint: dpName{FullName: []asn1.RawValue{uri}}}
	rdn := mustMarshal(pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "crl1"})
	issuerName := mustMarshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true,
		Bytes: mustMarshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: pki.Root.RawSubject})})
	entry := func(exts ...pkix.Extension) []x509.RevocationListEntry {
		return []x509.RevocationListEntry{{SerialNumber: big.NewInt(4242), RevocationTime: now.Add(-time.Hour), ExtraExtensions: exts}}
	}
	for _, tc := range []struct {
		name    string
		exts    []pkix.Extension
		entries []x509.RevocationListEntry
		want    string // "" = accepted
	}{
		{"good_idp_as_ca_emits", []pkix.Extension{idp(true, plain)}, nil, ""},
		{"good_idp_two_uris", []pkix.Extension{idp(true, idpPlain{DistributionPoint: dpName{FullName: []asn1.RawValue{uri, uri}}})}, nil, ""},
		{"good_unknown_noncritical", []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{5, 0}}}, nil, ""},
		{"good_entry_reason_code", nil, []x509.RevocationListEntry{{SerialNumber: big.NewInt(4242), RevocationTime: now.Add(-time.Hour), ReasonCode: 1}}, ""},
		{"good_entry_unknown_noncritical", nil, entry(pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 24}, Value: mustMarshal(now.UTC())}), ""},
		{"fail_delta_crl", []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: mustMarshal(big.NewInt(1))}}, nil, "delta CRL"},
		{"fail_delta_crl_noncritical", []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Value: mustMarshal(big.NewInt(1))}}, nil, "delta CRL"},
		{"fail_unknown_critical", []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}}, nil, "unknown critical extension"},
		{"fail_idp_only_user_certs", []pkix.Extension{idp(true, idpUserCerts{DistributionPoint: plain.DistributionPoint, OnlyUser: true})}, nil, "partial or indirect"},
		{"fail_idp_only_ca_certs", []pkix.Extension{idp(true, idpOnlyCA{OnlyCA: true})}, nil, "no distributionPoint"},
		{"fail_idp_only_some_reasons", []pkix.Extension{idp(true, idpSomeReasons{DistributionPoint: plain.DistributionPoint, OnlySomeReasons: asn1.BitString{Bytes: []byte{0x40}, BitLength: 2}})}, nil, "partial or indirect"},
		{"fail_idp_indirect", []pkix.Extension{idp(true, idpIndirect{DistributionPoint: plain.DistributionPoint, Indirect: true})}, nil, "partial or indirect"},
		{"fail_idp_name_relative", []pkix.Extension{idp(true, idpRelative{DistributionPoint: dpRelative{Relative: asn1.RawValue{FullBytes: mustMarshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: rdn})}}})}, nil, "not a fullName"},
		{"fail_idp_dns_name", []pkix.Extension{idp(true, idpPlain{DistributionPoint: dpName{FullName: []asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("ca.example.org")}}}})}, nil, "other than a URI"},
		{"fail_idp_noncritical_partial", []pkix.Extension{idp(false, idpUserCerts{DistributionPoint: plain.DistributionPoint, OnlyUser: true})}, nil, "partial or indirect"},
		{"fail_entry_certificate_issuer", nil, entry(pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 29}, Critical: true, Value: issuerName}), "indirect CRL"},
		{"fail_entry_unknown_critical", nil, entry(pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, Critical: true, Value: []byte{5, 0}}), "unknown critical extension"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
				Number: big.NewInt(7), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
				RevokedCertificateEntries: tc.entries, ExtraExtensions: tc.exts,
			}, pki.Intermediate, pki.InterKey)
			if err != nil {
				t.Fatal(err)
			}
			_, err = crl.Parse(der, pki.Intermediate, now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestStoreRefusesUnnumbered: once the issuer's CRLs carry a number, one without is
// refused (the rollback check needs it); a store that never saw a number takes it.
func TestStoreRefusesUnnumbered(t *testing.T) {
	pki := testenv.NewPKI(t)
	path := filepath.Join(t.TempDir(), "ca.crl")
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	testenv.WriteFile(t, path, unnumberedCRL(t, pki))
	if _, err := store.Refresh(ctx); err != nil {
		t.Fatalf("first, unnumbered CRL: %v", err)
	}
	if store.Load().Number != nil {
		t.Fatal("unnumbered CRL has a number")
	}
	pki.Revoke(big.NewInt(77))
	testenv.WriteFile(t, path, pki.CRL(t, testenv.CRLOptions{}))
	if _, err := store.Refresh(ctx); err != nil {
		t.Fatalf("numbered CRL: %v", err)
	}
	testenv.WriteFile(t, path, unnumberedCRL(t, pki))
	if _, err := store.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "without a CRL number") {
		t.Fatalf("unnumbered after numbered: %v", err)
	}
	if !store.Load().Revoked(big.NewInt(77)) {
		t.Fatal("the unnumbered CRL replaced the numbered one")
	}
}

// unnumberedCRL signs a CRL with no extensions at all, which x509.CreateRevocationList
// cannot make (it insists on a number): an old-style CRL from some other signer of the
// same key, listing nothing.
func unnumberedCRL(t testing.TB, pki *testenv.PKI) []byte {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	sigAlg := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}} // ecdsa-with-SHA256
	tbs, err := asn1.Marshal(struct {
		Version    int
		Signature  pkix.AlgorithmIdentifier
		Issuer     asn1.RawValue
		ThisUpdate time.Time
		NextUpdate time.Time
	}{1, sigAlg, asn1.RawValue{FullBytes: pki.Intermediate.RawSubject}, now.Add(-time.Minute), now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(tbs)
	sig, err := pki.InterKey.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, sigAlg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestStoreOnStale: Run tells OnStale's subscribers once when the CRL's nextUpdate
// plus grace passes, not again while it stays stale, and again after a fresh CRL
// went stale in turn.
func TestStoreOnStale(t *testing.T) {
	pki := testenv.NewPKI(t)
	path := filepath.Join(t.TempDir(), "ca.crl")
	soon := func() []byte {
		now := time.Now()
		return pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(2 * time.Second)}) // whole seconds in DER
	}
	testenv.WriteFile(t, path, soon())
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate, Interval: 20 * time.Millisecond, Grace: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stale := make(chan error, 8)
	store.OnStale(func(err error) { stale <- err })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { store.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	wait := func() {
		t.Helper()
		select {
		case err := <-stale:
			if !errors.Is(err, crl.ErrStale) {
				t.Fatalf("told %v, want ErrStale", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("not told that the CRL went stale")
		}
	}
	wait()
	time.Sleep(200 * time.Millisecond) // many polls while stale: told once
	if len(stale) != 0 {
		t.Fatalf("told %d more times while it stayed stale", len(stale))
	}
	testenv.WriteFile(t, path, soon())
	wait()
}

// TestStoreFileUnchanged: a file read again with the same bytes is not parsed again but
// confirms the CRL; a file with one byte changed is parsed again (here: and refused, the
// byte being the signature's last), whatever its tag says of the old one.
func TestStoreFileUnchanged(t *testing.T) {
	pki := testenv.NewPKI(t)
	path := filepath.Join(t.TempDir(), "ca.crl")
	der := pki.CRL(t, testenv.CRLOptions{})
	testenv.WriteFile(t, path, der)
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, want := range []bool{true, false, false} {
		before := store.ConfirmedAt()
		if changed, err := store.Refresh(ctx); err != nil || changed != want {
			t.Fatalf("read %d: changed=%v err=%v, want changed=%v", i, changed, err, want)
		}
		if !store.ConfirmedAt().After(before) {
			t.Fatalf("read %d did not confirm the CRL", i)
		}
	}
	bad := slices.Clone(der)
	bad[len(bad)-1] ^= 1
	testenv.WriteFile(t, path, bad)
	if _, err := store.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a changed signature byte: %v", err)
	}
}
