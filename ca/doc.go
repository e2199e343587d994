// Package ca is imapgate's issuing certificate authority: smallstep's embedded
// authority (github.com/smallstep/certificates) with imapgate's certificate
// profiles, its database of issued certificates and who asked for them, the CRL,
// and the HTTPS API that enrollment agents and admins call with role certificates.
//
// It is not a general-purpose CA: it issues exactly two kinds of certificate —
// user certificates bound to one mailbox identity (SAN rfc822Name, EKU clientAuth)
// and role certificates (SAN URI urn:imapgate:role:enroll or …:admin) — and it
// never sees a private key of either: the CSR is signed on the user's token or
// on the agent's machine.
//
// Relying parties (the front) do not import this package; they learn revocation
// from the CRL it publishes. Clients use package caclient.
package ca
