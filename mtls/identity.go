package mtls

import (
	"bufio"
	"bytes"
	"crypto/x509"
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
	// certificate, the domain compared case-insensitively.
	IdentityEmail IdentityMode = "email"
	// IdentityLocalPart: the login equals the local part of an rfc822Name SAN
	// (for mail servers whose users log in as "alice").
	IdentityLocalPart IdentityMode = "local_part"
	// IdentityCN: the login equals the certificate's subject common name.
	IdentityCN IdentityMode = "cn"
	// IdentityMap: a mapping file lists, for each certificate identity (its
	// e-mail address, or its CN when it has none), the logins it may use.
	IdentityMap IdentityMode = "map"
)

// IdentityPolicy binds logins to certificates. The zero value is IdentityEmail.
// It is immutable once built; a reload builds a new one.
type IdentityPolicy struct {
	Mode IdentityMode
	// logins maps a certificate identity (lower-cased domain) to allowed logins.
	logins map[string][]string
}

// Bind decides whether login name user (authcid) with authzid may log in with
// cert. It returns "" when the login is allowed, or the reason for the log.
// An authzid other than empty or the authcid is always refused: nobody logs in
// as somebody else through the front.
func (p *IdentityPolicy) Bind(cert *x509.Certificate, authzid, user string) string {
	if authzid != "" && authzid != user {
		return fmt.Sprintf("authzid %q differs from login %q", authzid, user)
	}
	if user == "" {
		return "empty login"
	}
	mode := IdentityEmail
	if p != nil && p.Mode != "" {
		mode = p.Mode
	}
	switch mode {
	case IdentityCN:
		if cert.Subject.CommonName == "" {
			return "certificate has no common name to bind the login to"
		}
		if cert.Subject.CommonName == user {
			return ""
		}
		return fmt.Sprintf("login %q does not match certificate common name %q", user, cert.Subject.CommonName)
	case IdentityMap:
		id := certIdentity(cert)
		if id == "" {
			return "certificate has neither an e-mail address nor a common name to look up in the identity map"
		}
		for _, l := range p.logins[id] {
			if l == user {
				return ""
			}
		}
		return fmt.Sprintf("login %q is not mapped to certificate identity %s", user, id)
	}
	if len(cert.EmailAddresses) == 0 {
		return "certificate has no e-mail address (rfc822Name SAN) to bind the login to"
	}
	for _, e := range cert.EmailAddresses {
		if mode == IdentityLocalPart {
			if at := strings.LastIndexByte(e, '@'); at > 0 && e[:at] == user {
				return ""
			}
		} else if sameMailbox(e, user) {
			return ""
		}
	}
	what := "e-mail"
	if mode == IdentityLocalPart {
		what = "e-mail local part of"
	}
	return fmt.Sprintf("login %q does not match certificate %s %s", user, what, strings.Join(cert.EmailAddresses, ", "))
}

func sameMailbox(a, b string) bool {
	ai := strings.LastIndexByte(a, '@')
	bi := strings.LastIndexByte(b, '@')
	if ai <= 0 || bi <= 0 {
		return false
	}
	return a[:ai] == b[:bi] && strings.EqualFold(a[ai+1:], b[bi+1:])
}

// certIdentity is the key of a certificate in the identity map: its first
// e-mail address with the domain lower-cased, or else its common name.
func certIdentity(cert *x509.Certificate) string {
	if len(cert.EmailAddresses) > 0 {
		return normMailbox(cert.EmailAddresses[0])
	}
	return cert.Subject.CommonName
}

func normMailbox(s string) string {
	if at := strings.LastIndexByte(s, '@'); at > 0 {
		return s[:at] + "@" + strings.ToLower(s[at+1:])
	}
	return s
}

// Limits of the identity map, so a wrong file cannot eat the front's memory.
const (
	maxMapFileBytes  = 16 << 20
	maxMapLineBytes  = 4096
	maxLoginsPerLine = 64
)

// NewIdentityPolicy builds a policy. mapFile is read for IdentityMap only.
func NewIdentityPolicy(mode IdentityMode, mapFile string) (*IdentityPolicy, error) {
	switch mode {
	case "":
		mode = IdentityEmail
	case IdentityEmail, IdentityLocalPart, IdentityCN:
	case IdentityMap:
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
		return &IdentityPolicy{Mode: mode, logins: m}, nil
	default:
		return nil, fmt.Errorf("identity.mode %q: use email, local_part, cn or map", mode)
	}
	if mapFile != "" {
		return nil, fmt.Errorf("identity.map_file is set but identity.mode is %s: set mode: map or remove the file", mode)
	}
	return &IdentityPolicy{Mode: mode}, nil
}

// ParseIdentityMap reads an identity map: one certificate identity per line,
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
