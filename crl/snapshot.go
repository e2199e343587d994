package crl

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Snapshot is one verified CRL. It is immutable once built: a newer CRL makes a new
// Snapshot, so readers may keep and use one without locking.
type Snapshot struct {
	// Issuer is the certificate whose key signed the CRL.
	Issuer *x509.Certificate
	// Number is the CRL number extension (nil when the CRL has none).
	Number *big.Int
	// ThisUpdate and NextUpdate are the CRL's own validity bounds.
	ThisUpdate, NextUpdate time.Time
	// ETag is the HTTP entity tag (or a content hash for files) the CRL came with.
	ETag string
	// LoadedAt is when this snapshot was verified and installed.
	LoadedAt time.Time

	revoked map[string]struct{} // key: serial magnitude bytes, see serialKey
}

// ErrStale is wrapped by errors about a CRL that is too old to rely on.
var ErrStale = errors.New("crl: stale")

// Parse verifies a CRL (DER or PEM) against issuer and returns a snapshot. It checks the
// signature, that the CRL names issuer as its issuer, that thisUpdate is not in the
// future (with a minute of clock skew), that nextUpdate is present and that the CRL is
// a complete CRL of everything the issuer revoked (see checkExtensions).
func Parse(data []byte, issuer *x509.Certificate, now time.Time) (*Snapshot, error) {
	if issuer == nil {
		return nil, errors.New("crl: parse: no issuer certificate configured")
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("crl: parse: PEM block is %q, want \"X509 CRL\"", block.Type)
		}
		der = block.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("crl: parse: %w", err)
	}
	if !bytes.Equal(rl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("crl: CRL issuer %q is not the configured issuer %q: check the issuer certificate and the CRL URL", rl.Issuer, issuer.Subject)
	}
	if len(rl.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(rl.AuthorityKeyId, issuer.SubjectKeyId) {
		return nil, fmt.Errorf("crl: CRL authority key id %x does not match issuer %q key id %x", rl.AuthorityKeyId, issuer.Subject, issuer.SubjectKeyId)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("crl: signature of CRL from %q does not verify: %w", issuer.Subject, err)
	}
	if err := checkExtensions(rl); err != nil {
		return nil, fmt.Errorf("crl: CRL from %q: %w", issuer.Subject, err)
	}
	if rl.NextUpdate.IsZero() {
		return nil, fmt.Errorf("crl: CRL from %q has no nextUpdate; refusing a CRL that never expires", issuer.Subject)
	}
	if rl.ThisUpdate.After(now.Add(time.Minute)) {
		return nil, fmt.Errorf("crl: CRL from %q has thisUpdate %s in the future: check the clocks", issuer.Subject, rl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	s := &Snapshot{
		Issuer:     issuer,
		Number:     rl.Number,
		ThisUpdate: rl.ThisUpdate,
		NextUpdate: rl.NextUpdate,
		LoadedAt:   now,
		revoked:    make(map[string]struct{}, len(rl.RevokedCertificateEntries)),
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber == nil {
			continue
		}
		s.revoked[serialKey(e.SerialNumber)] = struct{}{}
	}
	return s, nil
}

// Extensions the front understands. Go's ParseRevocationList does not refuse unknown
// critical extensions, so Parse does.
var (
	oidAuthorityKeyID           = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber                = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidReasonCode               = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidCertificateIssuer        = asn1.ObjectIdentifier{2, 5, 29, 29}
)

// checkExtensions refuses a CRL that is not a complete list of the issuer's
// revocations, or that says something the front would not understand: a snapshot
// replaces the previous one wholesale, so a delta CRL or a CRL of one partition taken
// for a complete one would un-revoke everything it leaves out.
//
//   - deltaCRLIndicator: a delta CRL lists only changes (refused, critical or not);
//   - issuingDistributionPoint: accepted only in the form imapgate's CA emits, a
//     distributionPoint whose fullName holds URIs and nothing else; onlyContains*,
//     onlySomeReasons, indirectCRL or a nameRelativeToCRLIssuer are refused;
//   - any other critical CRL extension (RFC 5280 §5.2: unknown critical means reject);
//   - in an entry, any critical extension but reasonCode, and certificateIssuer
//     (entries of an indirect CRL, about another CA's certificates) in any form.
func checkExtensions(rl *x509.RevocationList) error {
	for _, e := range rl.Extensions {
		switch {
		case e.Id.Equal(oidCRLNumber), e.Id.Equal(oidAuthorityKeyID):
		case e.Id.Equal(oidDeltaCRLIndicator):
			return errors.New("it is a delta CRL (deltaCRLIndicator); configure the complete CRL")
		case e.Id.Equal(oidIssuingDistributionPoint):
			if err := checkIDP(e.Value); err != nil {
				return fmt.Errorf("issuingDistributionPoint: %w", err)
			}
		case e.Critical:
			return fmt.Errorf("unknown critical extension %s", e.Id)
		}
	}
	for _, entry := range rl.RevokedCertificateEntries {
		for _, e := range entry.Extensions {
			switch {
			case e.Id.Equal(oidReasonCode):
			case e.Id.Equal(oidCertificateIssuer):
				return fmt.Errorf("entry %s names a certificate issuer (an indirect CRL): not supported", entry.SerialNumber)
			case e.Critical:
				return fmt.Errorf("entry %s has unknown critical extension %s", entry.SerialNumber, e.Id)
			}
		}
	}
	return nil
}

// checkIDP accepts exactly an IssuingDistributionPoint whose only field is
// distributionPoint [0] holding fullName [0] of one or more uniformResourceIdentifier
// [6] names (RFC 5280 §5.2.5): what ca.idpExtension writes. Such a CRL still covers every
// certificate of its issuer; every other field narrows its scope.
func checkIDP(der []byte) error {
	idp, err := readRaw(der, asn1.ClassUniversal, asn1.TagSequence, true)
	if err != nil {
		return errors.New("malformed")
	}
	dp, err := readRaw(idp, asn1.ClassContextSpecific, 0, true)
	if err != nil {
		if errors.Is(err, errTrailing) {
			return errors.New("onlyContainsUserCerts, onlyContainsCACerts, onlySomeReasons, indirectCRL or onlyContainsAttributeCerts set: a partial or indirect CRL is not supported")
		}
		return errors.New("no distributionPoint: only a complete CRL with a distribution point URI is supported")
	}
	names, err := readRaw(dp, asn1.ClassContextSpecific, 0, true)
	if err != nil {
		return errors.New("distributionPoint is not a fullName (nameRelativeToCRLIssuer is not supported)")
	}
	if len(names) == 0 {
		return errors.New("empty fullName")
	}
	for len(names) > 0 {
		var n asn1.RawValue
		if names, err = asn1.Unmarshal(names, &n); err != nil {
			return errors.New("malformed fullName")
		}
		if n.Class != asn1.ClassContextSpecific || n.Tag != 6 || n.IsCompound {
			return errors.New("fullName holds a name other than a URI")
		}
	}
	return nil
}

var errTrailing = errors.New("trailing data")

// readRaw reads the single element of der, which must have the given class, tag and
// form, and returns its contents; anything after it is errTrailing.
func readRaw(der []byte, class, tag int, compound bool) ([]byte, error) {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return nil, err
	}
	if v.Class != class || v.Tag != tag || v.IsCompound != compound {
		return nil, fmt.Errorf("unexpected tag %d/%d", v.Class, v.Tag)
	}
	if len(rest) > 0 {
		return nil, errTrailing
	}
	return v.Bytes, nil
}

// serialKey maps a serial to a map key. Serials are positive; a negative one (invalid but
// seen in the wild) gets a distinct prefix so it never collides with its absolute value.
func serialKey(n *big.Int) string {
	if n.Sign() < 0 {
		return "-" + string(n.Bytes())
	}
	return string(n.Bytes())
}

// Revoked reports whether serial is listed. A nil snapshot lists nothing.
func (s *Snapshot) Revoked(serial *big.Int) bool {
	if s == nil || serial == nil {
		return false
	}
	_, ok := s.revoked[serialKey(serial)]
	return ok
}

// Len is the number of revoked serials.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.revoked)
}

// Stale returns an error wrapping ErrStale when now is past NextUpdate plus grace.
func (s *Snapshot) Stale(now time.Time, grace time.Duration) error {
	if s == nil {
		return fmt.Errorf("%w: no CRL loaded yet", ErrStale)
	}
	if now.After(s.NextUpdate.Add(grace)) {
		return fmt.Errorf("%w: CRL from %q expired at %s (grace %s): check that the CA is up and re-signs its CRL", ErrStale, s.Issuer.Subject.CommonName, s.NextUpdate.UTC().Format(time.RFC3339), grace)
	}
	return nil
}

// NumberString is the CRL number in hex, or "" without one; for logs.
func (s *Snapshot) NumberString() string {
	if s == nil || s.Number == nil {
		return ""
	}
	return hex.EncodeToString(s.Number.Bytes())
}
