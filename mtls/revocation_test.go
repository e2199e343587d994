package mtls

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestRecheckRevocation: the handshake's second revocation check, once the session is
// registered, skips the store's match and the serial's lookup only while the
// configuration and its CRL are the very ones the first check looked in; a CRL that
// landed in between, one gone stale, or a reload that replaced the sources is checked
// in full.
func TestRecheckRevocation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, f *revocationFixture) (*state, time.Time)
		want   string // the refusal's metric label, "" for none
	}{
		{"unchanged", func(t *testing.T, f *revocationFixture) (*state, time.Time) { return f.st, f.now }, ""},
		{"a CRL listing it landed", func(t *testing.T, f *revocationFixture) (*state, time.Time) {
			f.pki.Revoke(f.leaf.Cert.SerialNumber)
			f.publish(t)
			return f.st, f.now
		}, "revoked"},
		{"a CRL not listing it landed", func(t *testing.T, f *revocationFixture) (*state, time.Time) {
			f.publish(t)
			return f.st, f.now
		}, ""},
		{"the CRL went stale", func(t *testing.T, f *revocationFixture) (*state, time.Time) {
			return f.st, f.now.Add(90 * 24 * time.Hour)
		}, "crl_unavailable"},
		{"a reload kept the source", func(t *testing.T, f *revocationFixture) (*state, time.Time) {
			return f.state(t, f.store), f.now
		}, ""},
		{"a reload removed the source", func(t *testing.T, f *revocationFixture) (*state, time.Time) {
			other := testenv.NewPKI(t)
			path := filepath.Join(t.TempDir(), "other.crl")
			testenv.WriteFile(t, path, other.CRL(t, testenv.CRLOptions{}))
			return f.state(t, newTestStore(t, path, other)), f.now
		}, "crl_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRevocationFixture(t)
			p, seen, rej := f.st.verifyPeer(tls.ConnectionState{PeerCertificates: f.leaf.Chain}, f.now)
			if rej != nil {
				t.Fatalf("first check refused: %s", rej.result)
			}
			st, now := tc.change(t, f)
			got := ""
			if rej := st.recheckRevocation(p, seen, now); rej != nil {
				got = rej.result
			}
			if got != tc.want {
				t.Fatalf("second check: %q, want %q", got, tc.want)
			}
		})
	}
}

type revocationFixture struct {
	pki     *testenv.PKI
	leaf    *testenv.Leaf
	server  *testenv.Leaf
	crlFile string
	store   *crl.Store
	st      *state
	now     time.Time
}

func newRevocationFixture(t *testing.T) *revocationFixture {
	f := &revocationFixture{pki: testenv.NewPKI(t), now: time.Now()}
	f.leaf = f.pki.Issue(t, testenv.LeafOptions{Emails: []string{testenv.Alice.Name}})
	f.server = f.pki.Server(t)
	f.crlFile = filepath.Join(t.TempDir(), "ca.crl")
	testenv.WriteFile(t, f.crlFile, f.pki.CRL(t, testenv.CRLOptions{}))
	f.store = newTestStore(t, f.crlFile, f.pki)
	f.st = f.state(t, f.store)
	return f
}

// state builds a configuration with store as its one CRL source.
func (f *revocationFixture) state(t *testing.T, store *crl.Store) *state {
	st, err := buildState(Options{
		Certificates: []tls.Certificate{f.server.TLSCertificate()},
		ClientRoots:  f.pki.Pool(),
		CRLs:         []*crl.Store{store},
		Backend:      BackendOptions{Address: "127.0.0.1:1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// publish writes a new CRL of the PKI and loads it into the store.
func (f *revocationFixture) publish(t *testing.T) {
	testenv.WriteFile(t, f.crlFile, f.pki.CRL(t, testenv.CRLOptions{}))
	if _, err := f.store.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func newTestStore(t *testing.T, path string, pki *testenv.PKI) *crl.Store {
	store, err := crl.NewStore(crl.Options{File: path, Issuer: pki.Intermediate})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return store
}
