// Package secretfile reads files that hold secrets — PINs, key passwords,
// private keys, TLS ticket keys — and refuses one that anybody but its owner
// may read or write: a secret in a file readable by others is no longer a
// secret, and imapgate fails closed rather than use it.
package secretfile
