// Package pkcs11 puts imapgate's second factor onto smartcards and YubiKeys.
//
// It opens any PKCS#11 module by path (SoftHSM2 in tests, OpenSC's
// opensc-pkcs11.so for smartcards, Yubico's libykcs11.so for YubiKey PIV),
// finds a token by label or serial — never by slot number, because slot IDs
// move (SoftHSM renumbers a slot when its token is initialised) — logs in with
// a [PIN] that never prints, generates a non-extractable key pair on the token,
// exposes it as a [crypto.Signer], and writes the issued certificate back
// beside the key under the same CKA_ID so that NSS (Thunderbird), OpenSC and
// p11-kit pair them.
//
// Tokens differ in what they accept. Every difference lives in one place, the
// [Profile] chosen for a module: SoftHSM2 and generic cards take a full,
// explicit template and a random CKA_ID; Yubico's ykcs11 wants an SO login
// with the management key for key generation and certificate import, picks
// the PIV slot from CKA_ID (9a) and refuses CKA_EXTRACTABLE.
//
// [Token.Enroll] is the whole enrollment on one token: key pair → CSR signed on
// the token → a caller-supplied function that has the CA sign it → certificate
// written to the token, with the key removed again if anything after key
// generation fails. The package imports nothing else of imapgate: how the CSR
// reaches the CA is the caller's business.
//
// It is not a general PKCS#11 toolkit: no secret keys, no decryption, no
// key import. Private keys are generated on the token and never leave it.
package pkcs11
