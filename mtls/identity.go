package mtls

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// IdentityMode says how the login name is bound to the client certificate.
type IdentityMode string

// The identity modes. Whatever the mode, a refusal looks to the client exactly
// like a wrong password; only the log says why.
const (
	// IdentityEmail (default): the login equals an rfc822Name SAN of the
	// certificate, the domain compared ASCII case-insensitively. The backend gets
	// the certificate's own spelling of the address.
	IdentityEmail IdentityMode = "email"
	// IdentityLocalPart: the login equals the local part of an rfc822Name SAN
	// whose domain is one of the allowed domains (for mail servers whose users log
	// in as "alice").
	IdentityLocalPart IdentityMode = "local_part"
	// IdentityCN: the login equals the certificate's subject common name.
	IdentityCN IdentityMode = "cn"
	// IdentityMap: a mapping file lists, for each certificate e-mail address, the
	// logins it may use. A certificate without an e-mail address has no entry.
	IdentityMap IdentityMode = "map"
)

// IdentityPolicy binds logins to certificates. The zero value is IdentityEmail.
// It is immutable once built; a reload builds a new one.
type IdentityPolicy struct {
	Mode IdentityMode
	// logins maps a certificate e-mail address (domain in ASCII lower case) to the
	// logins it may use.
	logins map[string][]string
	// domains are the allowed e-mail domains of local_part mode, in lower case.
	domains map[string]bool
}

// Bind decides whether login name user (authcid) with authzid may log in with
// cert. It returns the name to log in to the backend with, or why not (for the
// log). An authzid other than empty or the authcid is always refused: nobody logs
// in as somebody else through the front.
func (p *IdentityPolicy) Bind(cert *x509.Certificate, authzid, user string) (login, why string) {
	if authzid != "" && authzid != user {
		return "", fmt.Sprintf("authzid %q differs from login %q", authzid, user)
	}
	if user == "" {
		return "", "empty login"
	}
	mode := IdentityEmail
	if p != nil && p.Mode != "" {
		mode = p.Mode
	}
	switch mode {
	case IdentityCN:
		if cert.Subject.CommonName == "" {
			return "", "certificate has no common name to bind the login to"
		}
		if cert.Subject.CommonName == user {
			return user, ""
		}
		return "", fmt.Sprintf("login %q does not match certificate common name %q", user, cert.Subject.CommonName)
	case IdentityMap:
		if len(cert.EmailAddresses) == 0 {
			return "", "certificate has no e-mail address to look up in the identity map"
		}
		id := normMailbox(cert.EmailAddresses[0])
		for _, l := range p.logins[id] {
			if l == user {
				return user, ""
			}
		}
		return "", fmt.Sprintf("login %q is not mapped to certificate identity %s", user, id)
	}
	if len(cert.EmailAddresses) == 0 {
		return "", "certificate has no e-mail address (rfc822Name SAN) to bind the login to"
	}
	if mode == IdentityLocalPart {
		var elsewhere []string
		for _, e := range cert.EmailAddresses {
			local, domain, ok := splitMailbox(e)
			if !ok || local != user {
				continue
			}
			if p.domains[asciiLower(domain)] {
				return user, ""
			}
			elsewhere = append(elsewhere, e)
		}
		if len(elsewhere) > 0 {
			return "", fmt.Sprintf("certificate e-mail %s is in no domain of identity.domains", strings.Join(elsewhere, ", "))
		}
		return "", fmt.Sprintf("login %q does not match certificate e-mail local part of %s", user, strings.Join(cert.EmailAddresses, ", "))
	}
	for _, e := range cert.EmailAddresses {
		if sameMailbox(e, user) {
			return e, ""
		}
	}
	return "", fmt.Sprintf("login %q does not match certificate e-mail %s", user, strings.Join(cert.EmailAddresses, ", "))
}

// splitMailbox splits an address at its last '@'.
func splitMailbox(s string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "", "", false
	}
	return s[:at], s[at+1:], true
}

// sameMailbox: same local part, and the same domain up to ASCII case. Unicode case
// folding would let "alice@\u212Aitchen.org" (a Kelvin sign) match kitchen.org.
func sameMailbox(a, b string) bool {
	al, ad, ok1 := splitMailbox(a)
	bl, bd, ok2 := splitMailbox(b)
	return ok1 && ok2 && al == bl && asciiEqualFold(ad, bd)
}

// normMailbox is an address with its domain in ASCII lower case.
func normMailbox(s string) string {
	if local, domain, ok := splitMailbox(s); ok {
		return local + "@" + asciiLower(domain)
	}
	return s
}

// asciiLower lower-cases A–Z only.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// asciiEqualFold compares up to the case of A–Z only.
func asciiEqualFold(a, b string) bool {
	return len(a) == len(b) && asciiLower(a) == asciiLower(b)
}

// Limits of the identity map, so a wrong file cannot eat the front's memory.
const (
	maxMapFileBytes  = 16 << 20
	maxMapLineBytes  = 4096
	maxLoginsPerLine = 64
)

// NewIdentityPolicy builds a policy. mapFile is read for IdentityMap only; domains
// are the allowed e-mail domains of IdentityLocalPart, required there and refused
// in the other modes.
func NewIdentityPolicy(mode IdentityMode, mapFile string, domains []string) (*IdentityPolicy, error) {
	if mode == "" {
		mode = IdentityEmail
	}
	switch mode {
	case IdentityEmail, IdentityLocalPart, IdentityCN, IdentityMap:
	default:
		return nil, fmt.Errorf("identity.mode %q: use email, local_part, cn or map", mode)
	}
	p := &IdentityPolicy{Mode: mode}
	if mode == IdentityLocalPart {
		if len(domains) == 0 {
			return nil, errors.New("identity.mode local_part needs identity.domains: the e-mail domains whose local part is the login (e.g. [example.org]); without them a certificate for alice@anything would log in as alice")
		}
		p.domains = map[string]bool{}
		for _, d := range domains {
			if !isASCIIDomain(d) {
				return nil, fmt.Errorf("identity.domains: %q is not a domain name (write an internationalised domain in its ASCII xn-- form)", d)
			}
			p.domains[asciiLower(d)] = true
		}
	} else if len(domains) > 0 {
		return nil, fmt.Errorf("identity.domains is set but identity.mode is %s: it is only used with mode local_part", mode)
	}
	if mode != IdentityMap {
		if mapFile != "" {
			return nil, fmt.Errorf("identity.map_file is set but identity.mode is %s: set mode: map or remove the file", mode)
		}
		return p, nil
	}
	if mapFile == "" {
		return nil, fmt.Errorf("identity.mode map needs identity.map_file")
	}
	f, err := os.Open(mapFile)
	if err != nil {
		return nil, fmt.Errorf("identity.map_file: %w", err)
	}
	defer f.Close()
	m, err := ParseIdentityMap(f)
	if err != nil {
		return nil, fmt.Errorf("identity.map_file %s: %w", mapFile, err)
	}
	p.logins = m
	return p, nil
}

// isASCIIDomain: letters, digits, '-' and '.', not empty, no empty label.
func isASCIIDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ParseIdentityMap reads an identity map: one certificate e-mail address per line,
// then the logins it may use, separated by spaces or tabs. '#' starts a comment.
//
//	alice@example.org   alice  a.smith
//	bob@example.org     bob
//
// Every line is checked and every problem reported with its line number.
func ParseIdentityMap(r io.Reader) (map[string][]string, error) {
	m := map[string][]string{}
	sc := bufio.NewScanner(io.LimitReader(r, maxMapFileBytes+1))
	sc.Buffer(make([]byte, 0, 1024), maxMapLineBytes)
	var problems []string
	n, size := 0, 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		size += len(line) + 1
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		if len(fields) == 1 {
			problems = append(problems, fmt.Sprintf("line %d: %q has no login after it", n, fields[0]))
			continue
		}
		if len(fields) > 1+maxLoginsPerLine {
			problems = append(problems, fmt.Sprintf("line %d: more than %d logins", n, maxLoginsPerLine))
			continue
		}
		bad := false
		for _, f := range fields {
			for _, r := range f {
				if r < 0x21 || r == 0x7f {
					bad = true
				}
			}
		}
		if bad {
			problems = append(problems, fmt.Sprintf("line %d: control characters", n))
			continue
		}
		if _, _, ok := splitMailbox(fields[0]); !ok {
			problems = append(problems, fmt.Sprintf("line %d: %q is not an e-mail address (the map is keyed on the certificate's e-mail address)", n, fields[0]))
			continue
		}
		id := normMailbox(fields[0])
		if _, dup := m[id]; dup {
			problems = append(problems, fmt.Sprintf("line %d: %s is listed twice; put all its logins on one line", n, id))
			continue
		}
		m[id] = fields[1:]
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, fmt.Errorf("line %d is longer than %d bytes", n+1, maxMapLineBytes)
		}
		return nil, err
	}
	if size > maxMapFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxMapFileBytes)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return m, nil
}
