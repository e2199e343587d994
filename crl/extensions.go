package crl

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The extensions the front understands, as the DER contents of their OIDs, so that the
// entry loop compares bytes instead of decoding an OID per entry.
var (
	rawAuthorityKeyID           = rawOID(asn1.ObjectIdentifier{2, 5, 29, 35})
	rawCRLNumber                = rawOID(asn1.ObjectIdentifier{2, 5, 29, 20})
	rawDeltaCRLIndicator        = rawOID(asn1.ObjectIdentifier{2, 5, 29, 27})
	rawIssuingDistributionPoint = rawOID(asn1.ObjectIdentifier{2, 5, 29, 28})
	rawReasonCode               = rawOID(asn1.ObjectIdentifier{2, 5, 29, 21})
	rawCertificateIssuer        = rawOID(asn1.ObjectIdentifier{2, 5, 29, 29})
)

func rawOID(oid asn1.ObjectIdentifier) []byte {
	der, err := asn1.Marshal(oid)
	if err != nil {
		panic(err)
	}
	return der[2:] // short OIDs: one tag and one length byte
}

// oidString decodes an OID's contents for a message, or says it is malformed.
func oidString(id []byte) string {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(id) })
	der := cryptobyte.String(b.BytesOrPanic())
	var oid asn1.ObjectIdentifier
	if !der.ReadASN1ObjectIdentifier(&oid) {
		return fmt.Sprintf("(malformed OID %x)", id)
	}
	return oid.String()
}

// validOID reports whether id is an OID x509 would decode. Known OIDs are valid.
func validOID(id []byte) bool { return oidString(id)[0] != '(' }

// walkExtensions calls fn for each Extension ::= SEQUENCE { extnID, critical BOOLEAN
// DEFAULT FALSE, extnValue OCTET STRING } in the contents of an Extensions SEQUENCE,
// with the OID's contents and extnValue's contents. It does not allocate.
func walkExtensions(exts cryptobyte.String, fn func(id []byte, critical bool, value cryptobyte.String) error) error {
	for !exts.Empty() {
		var ext, id, value cryptobyte.String
		critical := false
		if !readASN1(&exts, &ext, cbasn1.SEQUENCE) || !readASN1(&ext, &id, cbasn1.OBJECT_IDENTIFIER) || len(id) == 0 {
			return errors.New("malformed extension")
		}
		if ext.PeekASN1Tag(cbasn1.BOOLEAN) && !ext.ReadASN1Boolean(&critical) {
			return errors.New("malformed extension criticality")
		}
		if !readASN1(&ext, &value, cbasn1.OCTET_STRING) || !ext.Empty() {
			return errors.New("malformed extension value")
		}
		if err := fn(id, critical, value); err != nil {
			return err
		}
	}
	return nil
}

// parseAKI returns the keyIdentifier of an AuthorityKeyIdentifier (nil without one).
func parseAKI(critical bool, value cryptobyte.String) ([]byte, error) {
	if critical {
		return nil, errors.New("authority key identifier marked critical (RFC 5280 forbids it)")
	}
	var akid, id cryptobyte.String
	if !value.ReadASN1(&akid, cbasn1.SEQUENCE) || !value.Empty() {
		return nil, errors.New("malformed authority key identifier")
	}
	if !akid.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific()) {
		return nil, nil
	}
	if !akid.ReadASN1(&id, cbasn1.Tag(0).ContextSpecific()) {
		return nil, errors.New("malformed authority key identifier")
	}
	return id, nil
}

// checkCRLExtension refuses a CRL that is not a complete list of the issuer's
// revocations, or that says something the front would not understand: a snapshot
// replaces the previous one wholesale, so a delta CRL or a CRL of one partition taken
// for a complete one would un-revoke everything it leaves out. (The CRL number is read
// by the caller; the authority key id was checked by verify.)
//
//   - deltaCRLIndicator: a delta CRL lists only changes (refused, critical or not);
//   - issuingDistributionPoint: accepted only in the form imapgate's CA emits, a
//     distributionPoint whose fullName holds URIs and nothing else; onlyContains*,
//     onlySomeReasons, indirectCRL or a nameRelativeToCRLIssuer are refused;
//   - any other critical CRL extension (RFC 5280 §5.2: unknown critical means reject).
//
// Entries are checked by checkEntryExtension.
func checkCRLExtension(id []byte, critical bool, value []byte) error {
	switch {
	case bytes.Equal(id, rawAuthorityKeyID):
	case bytes.Equal(id, rawDeltaCRLIndicator):
		return errors.New("it is a delta CRL (deltaCRLIndicator); configure the complete CRL")
	case bytes.Equal(id, rawIssuingDistributionPoint):
		if err := checkIDP(value); err != nil {
			return fmt.Errorf("issuingDistributionPoint: %w", err)
		}
	case !validOID(id):
		return errors.New("malformed extension OID")
	case critical:
		return fmt.Errorf("unknown critical extension %s", oidString(id))
	}
	return nil
}

// checkEntryExtension allows in an entry any critical extension but reasonCode, and
// refuses certificateIssuer (entries of an indirect CRL, about another CA's
// certificates) in any form. serial renders the entry's serial for a message.
func checkEntryExtension(id []byte, critical bool, value cryptobyte.String, serial func() string) error {
	switch {
	case bytes.Equal(id, rawReasonCode):
		// As x509 reads it: an ENUMERATED that fits an int.
		var reason int
		if !value.ReadASN1Enum(&reason) {
			return fmt.Errorf("entry %s has a malformed reasonCode", serial())
		}
	case bytes.Equal(id, rawCertificateIssuer):
		return fmt.Errorf("entry %s names a certificate issuer (an indirect CRL): not supported", serial())
	case !validOID(id):
		return fmt.Errorf("entry %s has a malformed extension OID", serial())
	case critical:
		return fmt.Errorf("entry %s has unknown critical extension %s", serial(), oidString(id))
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
