package crl

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Parse verifies a CRL (DER or PEM) against issuer and returns a snapshot. It checks the
// signature, that the CRL names issuer as its issuer, that thisUpdate is not in the
// future (with a minute of clock skew), that nextUpdate is present and that the CRL is
// a complete CRL of everything the issuer revoked (see checkCRLExtension).
//
// It works in the order that keeps a forged CRL cheap, whatever its size: first it only
// splits the CRL into its to-be-signed bytes, signature algorithm and signature, checks
// the issuer's name and key id and verifies the signature over the raw to-be-signed
// bytes — slicing and one hash, no allocation that grows with the CRL —, and only a
// CRL its issuer signed has its entries parsed. The entries are read straight into the
// serial index (see index.go), never into x509.RevocationList's per-entry big.Ints,
// times and extension slices.
//
// The parser is at least as strict as x509.ParseRevocationList (FuzzParseDifferential
// holds it to reading the same serials, number and dates), and stricter where a
// complete CRL must be unambiguous: no data after any element, no extension twice.
func Parse(data []byte, issuer *x509.Certificate, now time.Time) (*Snapshot, error) {
	return parse(data, issuer, now, nil, nil)
}

// parse is Parse, except that when prev (the current snapshot, or nil) was built from
// the same revokedCertificates bytes, the new snapshot shares prev's index instead of
// reading and sorting the entries again (see reuse.go). Everything else is checked as
// for any CRL, and before: the signature, the issuer, the dates and the extensions. A
// non-nil p spreads the reading of the entries over time (see pace.go).
func parse(data []byte, issuer *x509.Certificate, now time.Time, prev *Snapshot, p *pacer) (*Snapshot, error) {
	if issuer == nil {
		return nil, errors.New("crl: parse: no issuer certificate configured")
	}
	der := data
	if block, _ := pemDecode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("crl: parse: PEM block is %q, want \"X509 CRL\"", block.Type)
		}
		der = block.Bytes
	}
	if len(der) > MaxCRLSize {
		return nil, fmt.Errorf("crl: parse: CRL of %d bytes, over the limit of %d (a million entries)", len(der), MaxCRLSize)
	}
	c, err := split(der)
	if err != nil {
		return nil, fmt.Errorf("crl: parse: %w", err)
	}
	if err := c.verify(issuer); err != nil {
		return nil, err
	}
	s, err := c.snapshot(issuer, prev, p)
	if err != nil {
		return nil, fmt.Errorf("crl: CRL from %q: %w", issuer.Subject, err)
	}
	if s.NextUpdate.IsZero() {
		return nil, fmt.Errorf("crl: CRL from %q has no nextUpdate; refusing a CRL that never expires", issuer.Subject)
	}
	if s.ThisUpdate.After(now.Add(time.Minute)) {
		return nil, fmt.Errorf("crl: CRL from %q has thisUpdate %s in the future: check the clocks", issuer.Subject, s.ThisUpdate.UTC().Format(time.RFC3339))
	}
	s.LoadedAt = now
	return s, nil
}

// pemDecode is pem.Decode, except for what is one DER element from its first byte to
// its last, which no PEM text is (it would open with "0" and a length byte that counts
// its other bytes) and which is left alone. pem.Decode searches its whole input for
// "-----BEGIN", 5 % of a million-entry reload in DER, whose bytes hold many "-".
func pemDecode(data []byte) (*pem.Block, []byte) {
	s := cryptobyte.String(data)
	var el cryptobyte.String
	var tag cbasn1.Tag
	if s.ReadAnyASN1Element(&el, &tag) && s.Empty() {
		return nil, data
	}
	return pem.Decode(data)
}

// signedCRL is a CRL split into its parts (RFC 5280 §5.1) without parsing what lies
// inside them: every field is a slice of the input.
type signedCRL struct {
	tbs       []byte // the whole TBSCertList element, what the signature covers
	sigAlg    []byte // contents of the AlgorithmIdentifier (inner and outer are equal)
	signature []byte
	issuer    []byte // the issuer Name element
	// The rest of the TBSCertList: thisUpdate and nextUpdate elements, the contents of
	// revokedCertificates, and of the extensions' SEQUENCE inside [0].
	thisUpdate, nextUpdate cryptobyte.String
	revoked                cryptobyte.String
	extensions             cryptobyte.String
}

var (
	errMalformed = errors.New("malformed CRL")
	errTrailing  = errors.New("trailing data")
)

// split reads the CRL's structure: CertificateList ::= SEQUENCE { tbsCertList,
// signatureAlgorithm, signatureValue }, TBSCertList ::= SEQUENCE { version (v2),
// signature, issuer, thisUpdate, nextUpdate OPTIONAL, revokedCertificates OPTIONAL,
// crlExtensions [0] OPTIONAL }. Nothing may follow an element.
func split(der []byte) (*signedCRL, error) {
	var c signedCRL
	in := cryptobyte.String(der)
	var outer, tbs, outerAlg cryptobyte.String
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) {
		return nil, errMalformed
	}
	if !in.Empty() {
		return nil, fmt.Errorf("%w after the CRL", errTrailing)
	}
	var sig asn1.BitString
	if !outer.ReadASN1Element(&tbs, cbasn1.SEQUENCE) || !outer.ReadASN1(&outerAlg, cbasn1.SEQUENCE) ||
		!outer.ReadASN1BitString(&sig) || !outer.Empty() {
		return nil, errMalformed
	}
	if sig.BitLength%8 != 0 {
		return nil, errors.New("malformed signature")
	}
	c.tbs, c.sigAlg, c.signature = tbs, outerAlg, sig.Bytes
	var version int
	var innerAlg cryptobyte.String
	if !tbs.ReadASN1(&tbs, cbasn1.SEQUENCE) || !tbs.ReadASN1Integer(&version) {
		return nil, errors.New("malformed or missing CRL version")
	}
	if version != 1 {
		return nil, fmt.Errorf("unsupported CRL version %d (want v2)", version+1)
	}
	if !tbs.ReadASN1(&innerAlg, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed signature algorithm")
	}
	if !bytes.Equal(innerAlg, outerAlg) {
		return nil, errors.New("inner and outer signature algorithms differ")
	}
	var issuer cryptobyte.String
	if !tbs.ReadASN1Element(&issuer, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed issuer")
	}
	c.issuer = issuer
	if !readTimeElement(&tbs, &c.thisUpdate) {
		return nil, errors.New("malformed or missing thisUpdate")
	}
	if tbs.PeekASN1Tag(cbasn1.UTCTime) || tbs.PeekASN1Tag(cbasn1.GeneralizedTime) {
		readTimeElement(&tbs, &c.nextUpdate)
	}
	if tbs.PeekASN1Tag(cbasn1.SEQUENCE) && !tbs.ReadASN1(&c.revoked, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed revokedCertificates")
	}
	if tbs.PeekASN1Tag(tagExtensions) {
		var exts cryptobyte.String
		if !tbs.ReadASN1(&exts, tagExtensions) || !exts.ReadASN1(&c.extensions, cbasn1.SEQUENCE) || !exts.Empty() {
			return nil, errors.New("malformed extensions")
		}
	}
	if !tbs.Empty() {
		return nil, fmt.Errorf("%w in the TBSCertList", errTrailing)
	}
	return &c, nil
}

var tagExtensions = cbasn1.Tag(0).Constructed().ContextSpecific()

// verify checks, in this order and before anything of the CRL's contents is parsed, that
// the CRL names issuer, that its authority key id (if any) is issuer's key id, that
// issuer may sign CRLs, and the signature over the raw TBSCertList.
func (c *signedCRL) verify(issuer *x509.Certificate) error {
	if !bytes.Equal(c.issuer, issuer.RawSubject) {
		return fmt.Errorf("crl: CRL issuer %q is not the configured issuer %q: check the issuer certificate and the CRL URL", nameString(c.issuer), issuer.Subject)
	}
	var aki []byte
	err := walkExtensions(c.extensions, func(id []byte, critical bool, value cryptobyte.String) error {
		if bytes.Equal(id, rawAuthorityKeyID) {
			var err error
			aki, err = parseAKI(critical, value)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("crl: parse: %w", err)
	}
	if len(aki) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(aki, issuer.SubjectKeyId) {
		return fmt.Errorf("crl: CRL authority key id %x does not match issuer %q key id %x", aki, issuer.Subject, issuer.SubjectKeyId)
	}
	// What x509.RevocationList.CheckSignatureFrom demands of the issuer.
	if issuer.Version == 3 && !issuer.BasicConstraintsValid || issuer.BasicConstraintsValid && !issuer.IsCA ||
		issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return fmt.Errorf("crl: issuer %q is not a CA allowed to sign CRLs (basicConstraints, keyUsage cRLSign): configure the CA certificate that signs the CRL", issuer.Subject)
	}
	alg, err := signatureAlgorithm(c.sigAlg)
	if err != nil {
		return fmt.Errorf("crl: CRL from %q: %w", issuer.Subject, err)
	}
	if err := issuer.CheckSignature(alg, c.tbs, c.signature); err != nil {
		return fmt.Errorf("crl: signature of CRL from %q does not verify: %w", issuer.Subject, err)
	}
	return nil
}

// The signature algorithms a CRL may use: those x509 verifies and a CA signs CRLs with
// (x509.CreateRevocationList's defaults for EC, RSA and Ed25519 keys). SHA-1 and MD5
// are insecure; RSA-PSS is not produced by the CA and is refused.
var sigAlgs = []struct {
	oid       asn1.ObjectIdentifier
	alg       x509.SignatureAlgorithm
	nullParam bool // parameters NULL (or absent) as for RSA; else none at all
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, x509.ECDSAWithSHA256, false},
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}, x509.ECDSAWithSHA384, false},
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}, x509.ECDSAWithSHA512, false},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, x509.SHA256WithRSA, true},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}, x509.SHA384WithRSA, true},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}, x509.SHA512WithRSA, true},
	{asn1.ObjectIdentifier{1, 3, 101, 112}, x509.PureEd25519, false},
}

func signatureAlgorithm(ai cryptobyte.String) (x509.SignatureAlgorithm, error) {
	var oid asn1.ObjectIdentifier
	if !ai.ReadASN1ObjectIdentifier(&oid) {
		return 0, errors.New("malformed signature algorithm")
	}
	for _, a := range sigAlgs {
		if !oid.Equal(a.oid) {
			continue
		}
		if !ai.Empty() && !(a.nullParam && bytes.Equal(ai, []byte{5, 0})) {
			return 0, fmt.Errorf("signature algorithm %s with unexpected parameters", oid)
		}
		return a.alg, nil
	}
	return 0, fmt.Errorf("unsupported signature algorithm %s (want ECDSA, RSA PKCS#1 v1.5 with SHA-2, or Ed25519)", oid)
}

// nameString renders a raw Name for an error message.
func nameString(raw []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) > 0 {
		return fmt.Sprintf("(malformed name of %d bytes)", len(raw))
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdns)
	return n.String()
}

// snapshot parses what verify left alone: the dates, the CRL's extensions and the
// entries, into a Snapshot; the entries are prev's when they are its byte for byte.
func (c *signedCRL) snapshot(issuer *x509.Certificate, prev *Snapshot, p *pacer) (*Snapshot, error) {
	s := &Snapshot{Issuer: issuer}
	if !parseTime(c.thisUpdate, &s.ThisUpdate) {
		return nil, errors.New("malformed thisUpdate")
	}
	if c.nextUpdate != nil && !parseTime(c.nextUpdate, &s.NextUpdate) {
		return nil, errors.New("malformed nextUpdate")
	}
	seen := map[string]bool{}
	err := walkExtensions(c.extensions, func(id []byte, critical bool, value cryptobyte.String) error {
		if seen[string(id)] {
			return fmt.Errorf("extension %s appears twice", oidString(id))
		}
		seen[string(id)] = true
		if bytes.Equal(id, rawCRLNumber) {
			n := new(big.Int)
			if !value.ReadASN1Integer(n) || !value.Empty() {
				return errors.New("malformed CRL number")
			}
			s.Number = n
			return nil
		}
		return checkCRLExtension(id, critical, value)
	})
	if err != nil {
		return nil, err
	}
	if err := s.indexEntries(c.revoked, prev, p); err != nil {
		return nil, err
	}
	return s, nil
}

// parseTime reads a UTCTime or GeneralizedTime element as x509 does.
func parseTime(el cryptobyte.String, out *time.Time) bool {
	switch {
	case el.PeekASN1Tag(cbasn1.UTCTime):
		return el.ReadASN1UTCTime(out) && el.Empty()
	case el.PeekASN1Tag(cbasn1.GeneralizedTime):
		return el.ReadASN1GeneralizedTime(out) && el.Empty()
	}
	return false
}
