package ca

import (
	"context"
	"crypto"
	"errors"
	"io"
	"math/big"
	"testing"
	"time"

	"github.com/smallstep/certificates/db"
)

// gatedSigner is the intermediate key of a node that stalls while signing (a
// slow HSM, a paused VM): its first signature waits until gate is closed.
type gatedSigner struct {
	crypto.Signer
	signing chan struct{}
	gate    chan struct{}
}

func (g *gatedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	select {
	case <-g.signing:
	default:
		close(g.signing)
		<-g.gate
	}
	return g.Signer.Sign(r, digest, opts)
}

// TestCRLGenerationFenced: node A stalls in the middle of signing CRL n+1
// longer than the lock's TTL, and another writer publishes CRL n+1 with a
// revocation made meanwhile. When A wakes up it must not store a second CRL
// n+1 (without that revocation) over it.
func TestCRLGenerationFenced(t *testing.T) {
	for _, tt := range []struct {
		name string
		// overtake publishes CRL n+1 while A stalls and returns its number.
		overtake func(t *testing.T, c *CA) int64
	}{
		{"node B's clock a minute ahead sees A's lock expired", func(t *testing.T, c *CA) int64 {
			nodeB := &CA{cfg: c.cfg, db: c.db, inter: c.inter, interKey: c.interKey, log: quiet,
				now: func() time.Time { return time.Now().Add(2 * crlLockTTL) }}
			info, err := nodeB.generateCRL(context.Background())
			if err != nil {
				t.Fatalf("node B: %v", err)
			}
			return info.Number
		}},
		// Past the lock check: only the swap of the CRL row itself stops A.
		{"the CRL row replaced without the lock", func(t *testing.T, c *CA) int64 {
			prev, err := c.db.GetCRL()
			if err != nil {
				t.Fatal(err)
			}
			next := *prev
			next.Number++
			if err := c.db.StoreCRL(&next); err != nil {
				t.Fatal(err)
			}
			return next.Number
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := benchCA(t)
			base, err := c.CRL()
			if err != nil {
				t.Fatal(err)
			}
			gated := &gatedSigner{Signer: c.interKey, signing: make(chan struct{}), gate: make(chan struct{})}
			nodeA := &CA{cfg: c.cfg, db: c.db, inter: c.inter, interKey: gated, log: quiet, now: time.Now}
			type result struct {
				info *db.CertificateRevocationListInfo
				err  error
			}
			doneA := make(chan result, 1)
			go func() {
				info, err := nodeA.generateCRL(context.Background())
				doneA <- result{info, err}
			}()
			<-gated.signing // A holds the lock and has read the revocations

			serial := big.NewInt(777001)
			if err := c.db.Revoke(&db.RevokedCertificateInfo{Serial: serial.String(), ReasonCode: 1,
				RevokedAt: time.Now().UTC(), ExpiresAt: time.Now().Add(time.Hour), MTLS: true}); err != nil {
				t.Fatal(err)
			}
			other := tt.overtake(t, c)
			if other <= base.Number {
				t.Fatalf("the other writer stored CRL %d after CRL %d", other, base.Number)
			}
			close(gated.gate)
			a := <-doneA
			if a.err != nil {
				t.Fatalf("node A: %v (it should sign again after being overtaken)", a.err)
			}
			if a.info.Number <= other {
				t.Errorf("node A stored CRL %d after CRL %d", a.info.Number, other)
			}
			stored, err := c.db.GetCRL()
			if err != nil {
				t.Fatal(err)
			}
			if stored.Number != a.info.Number {
				t.Errorf("stored CRL %d, node A reports %d", stored.Number, a.info.Number)
			}
			if num, ok := crlListsSerial(t, c, serial); !ok {
				t.Errorf("the stored CRL %d lost the revocation made while A was signing", num)
			}
		})
	}
}

// slowSigner stands for an HSM or a database that stalls while the CRL is
// signed.
type slowSigner struct {
	crypto.Signer
	d time.Duration
}

func (s *slowSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	time.Sleep(s.d)
	return s.Signer.Sign(r, digest, opts)
}

// TestCRLSlowSigningAlone: a lone node whose signing outlasts the lock TTL
// still stores its CRL: nobody took the lock, so nothing was overtaken.
func TestCRLSlowSigningAlone(t *testing.T) {
	c := benchCA(t)
	defer func(d time.Duration) { crlLockTTL = d }(crlLockTTL)
	crlLockTTL = 100 * time.Millisecond
	before, err := c.CRL()
	if err != nil {
		t.Fatal(err)
	}
	slow := &CA{cfg: c.cfg, db: c.db, inter: c.inter, interKey: &slowSigner{c.interKey, 300 * time.Millisecond}, log: quiet, now: time.Now}
	info, err := slow.generateCRL(context.Background())
	if err != nil {
		t.Fatalf("a signing slower than the lock TTL, with no other node: %v", err)
	}
	if info.Number <= before.Number {
		t.Errorf("CRL number %d after %d", info.Number, before.Number)
	}
}

// TestRevokeRetryPublishesUncounted: a node stored a revocation and died
// before counting it. The admin's retry gets 409, and it is what gets the
// revocation onto the CRL.
func TestRevokeRetryPublishesUncounted(t *testing.T) {
	c := openTestCA(t, func(cfg *Config) { cfg.CRL.CheckInterval = Duration{50 * time.Millisecond} })
	cert := issueTestCert(t, c)
	// What smallstep stores; the count never came.
	if err := c.db.Revoke(&db.RevokedCertificateInfo{Serial: cert.SerialNumber.String(), ReasonCode: 1,
		RevokedAt: time.Now().UTC(), ExpiresAt: cert.NotAfter, MTLS: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(context.Background(), cert.SerialNumber, 1, "", Requester{Subject: "test"}); !errors.Is(err, ErrAlreadyRevoked) {
		t.Fatalf("retry: %v, want already revoked", err)
	}
	if !waitListed(t, c, cert.SerialNumber, 5*time.Second) {
		t.Fatal("5 s after the retry (check_interval 50ms) the CRL still misses the revocation")
	}
}
