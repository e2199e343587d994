package mtls

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// This file is the IMAP wire parser for the pre-auth commands: tag, command name and
// arguments made of atoms, quoted strings (with \" and \\ escapes), literals {n} and
// {n+}, NIL and parenthesised lists. Every length is bounded; nothing is read that the
// limits do not allow.

// Limits of the pre-auth parser. They are generous for LOGIN and AUTHENTICATE PLAIN
// (a user name, a password, an ID list) and small enough that a client cannot make the
// front hold much memory before it has logged in.
type wireLimits struct {
	MaxLine     int // bytes of one line, CRLF included
	MaxLiteral  int // bytes of one literal
	MaxCommand  int // bytes of a whole command, literals included
	MaxLiterals int // literals in one command
	MaxArgs     int // arguments (list members included)
}

var defaultWireLimits = wireLimits{MaxLine: 8192, MaxLiteral: 4096, MaxCommand: 16384, MaxLiterals: 4, MaxArgs: 64}

type argKind int

const (
	argAtom argKind = iota
	argString
	argNil
	argList
)

// arg is one parsed argument.
type arg struct {
	kind argKind
	s    string
	list []arg
}

// command is one fully parsed client command.
type command struct {
	tag  string
	name string // upper case
	args []arg
}

// wireReader reads commands from a client.
type wireReader struct {
	br  *bufio.Reader
	lim wireLimits
	// cont is called before the data of a synchronising literal is read; it sends
	// the "+ " continuation request.
	cont func() error
}

// errWire is a parse failure of one command: the command gets a tagged BAD (or an
// untagged one when no tag could be read) and the connection stays open, because the
// whole line, literals included, was consumed.
type errWire struct {
	tag  string
	text string
	code string
}

func (e *errWire) Error() string { return "imap: " + e.text }

// errFatal is a failure after which the stream cannot be resynchronised: the connection
// gets an untagged BYE and is closed.
type errFatal struct {
	code string
	text string
}

func (e *errFatal) Error() string { return "imap: " + e.text }

// readLine reads one line ending in LF, at most max bytes, and returns it without the
// CRLF. A line over the limit is fatal: we do not read on to find its end.
func readLine(br *bufio.Reader, max int) (string, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > max {
			return "", &errFatal{code: "TOOBIG", text: fmt.Sprintf("line longer than %d bytes", max)}
		}
		buf = append(buf, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF && len(buf) > 0 {
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	buf = buf[:len(buf)-1]
	if n := len(buf); n > 0 && buf[n-1] == '\r' {
		buf = buf[:n-1]
	}
	return string(buf), nil
}

// parser walks one command across its lines and literals.
type parser struct {
	r        *wireReader
	line     string
	pos      int
	total    int
	literals int
	nargs    int
	tag      string
}

// ReadCommand reads and parses one whole command.
func (r *wireReader) ReadCommand() (*command, error) {
	line, err := readLine(r.br, r.lim.MaxLine)
	if err != nil {
		return nil, err
	}
	p := &parser{r: r, line: line, total: len(line) + 2}
	cmd, err := p.command()
	if err != nil {
		var we *errWire
		if errors.As(err, &we) {
			we.tag = p.tag
			// The rest of the line is dropped with it; what the client still sends
			// for this command must be dropped too, or it would be read as commands.
			if err := p.skipLiterals(); err != nil {
				return nil, err
			}
		}
		return nil, err
	}
	return cmd, nil
}

// skipLiterals reads and drops the literals that a command which failed to parse still
// announces at the end of its current line. A synchronising literal {n} is not sent
// until we say "+", which we do not: the BAD ends the command for the client. A
// non-synchronising one {n+} is on its way regardless; its bytes (a password, say) must
// not be read as the next command, so they are read and dropped, with the line after
// them, which may announce another. Past the limits, or with a length we cannot read,
// the stream cannot be resynchronised and the connection ends.
func (p *parser) skipLiterals() error {
	for {
		n, nonSync, ok := trailingLiteral(p.line)
		if !nonSync {
			return nil
		}
		p.literals++
		if !ok || n > p.r.lim.MaxLiteral || p.total+n > p.r.lim.MaxCommand || p.literals > p.r.lim.MaxLiterals {
			return &errFatal{code: "TOOBIG", text: "invalid command with a non-synchronising literal over the limits"}
		}
		if _, err := io.CopyN(io.Discard, p.r.br, int64(n)); err != nil {
			return err
		}
		p.total += n
		line, err := readLine(p.r.br, p.r.lim.MaxLine)
		if err != nil {
			return err
		}
		p.total += len(line) + 2
		if p.total > p.r.lim.MaxCommand {
			return &errFatal{code: "TOOBIG", text: fmt.Sprintf("command longer than %d bytes", p.r.lim.MaxCommand)}
		}
		p.line, p.pos = line, 0
	}
}

// trailingLiteral looks at the end of line for a literal announcement: nonSync is true
// when it ends in "+}" after a "{"; ok when what is between is a length we can read.
func trailingLiteral(line string) (n int, nonSync, ok bool) {
	if !strings.HasSuffix(line, "+}") {
		return 0, false, false
	}
	open := strings.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false, false
	}
	spec := line[open+1 : len(line)-2]
	if spec == "" || len(spec) > 10 || strings.TrimLeft(spec, "0123456789") != "" {
		return 0, true, false
	}
	n, err := strconv.Atoi(spec)
	return n, true, err == nil
}

func (p *parser) bad(format string, a ...any) error {
	return &errWire{text: fmt.Sprintf(format, a...)}
}

func (p *parser) eol() bool { return p.pos >= len(p.line) }

func (p *parser) command() (*command, error) {
	tag := p.takeWhile(isTagChar)
	if tag == "" {
		return nil, p.bad("expected a tag at the start of the line")
	}
	p.tag = tag
	if p.eol() || p.line[p.pos] != ' ' {
		return nil, p.bad("expected a space and a command after the tag")
	}
	p.pos++
	name := p.takeWhile(isAtomChar)
	if name == "" {
		return nil, p.bad("expected a command name")
	}
	cmd := &command{tag: tag, name: strings.ToUpper(name)}
	for !p.eol() {
		if p.line[p.pos] != ' ' {
			return nil, p.bad("unexpected %q after %s", p.line[p.pos], cmd.name)
		}
		p.pos++
		a, err := p.arg(0)
		if err != nil {
			return nil, err
		}
		cmd.args = append(cmd.args, a)
	}
	return cmd, nil
}

func (p *parser) arg(depth int) (arg, error) {
	p.nargs++
	if p.nargs > p.r.lim.MaxArgs {
		return arg{}, p.bad("too many arguments")
	}
	if p.eol() {
		return arg{}, p.bad("expected an argument")
	}
	switch c := p.line[p.pos]; {
	case c == '"':
		s, err := p.quoted()
		return arg{kind: argString, s: s}, err
	case c == '{':
		s, err := p.literal()
		return arg{kind: argString, s: s}, err
	case c == '(':
		if depth > 0 {
			return arg{}, p.bad("nested lists are not allowed before login")
		}
		p.pos++
		var list []arg
		for {
			if p.eol() {
				return arg{}, p.bad("unterminated list")
			}
			if p.line[p.pos] == ')' {
				p.pos++
				return arg{kind: argList, list: list}, nil
			}
			if len(list) > 0 {
				if p.line[p.pos] != ' ' {
					return arg{}, p.bad("expected a space between list members")
				}
				p.pos++
			}
			a, err := p.arg(depth + 1)
			if err != nil {
				return arg{}, err
			}
			list = append(list, a)
		}
	default:
		atom := p.takeWhile(isAstringChar)
		if atom == "" {
			return arg{}, p.bad("unexpected character %q", c)
		}
		if strings.EqualFold(atom, "NIL") {
			return arg{kind: argNil}, nil
		}
		return arg{kind: argAtom, s: atom}, nil
	}
}

func (p *parser) quoted() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for {
		if p.eol() {
			return "", p.bad("unterminated quoted string")
		}
		c := p.line[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.eol() {
				return "", p.bad("unterminated quoted string")
			}
			e := p.line[p.pos]
			if e != '"' && e != '\\' {
				return "", p.bad("invalid escape \\%c in quoted string", e)
			}
			b.WriteByte(e)
			p.pos++
		case 0:
			return "", p.bad("NUL in quoted string")
		default:
			b.WriteByte(c)
		}
	}
}

// literal reads {n} or {n+} at the end of the line, then the n bytes, then continues
// with the next line.
func (p *parser) literal() (string, error) {
	end := strings.IndexByte(p.line[p.pos:], '}')
	if end < 0 || p.pos+end != len(p.line)-1 {
		return "", p.bad("a literal {n} must end the line")
	}
	spec := p.line[p.pos+1 : p.pos+end]
	nonSync := strings.HasSuffix(spec, "+")
	spec = strings.TrimSuffix(spec, "+")
	if spec == "" || len(spec) > 10 || strings.TrimLeft(spec, "0123456789") != "" {
		return "", p.bad("invalid literal length %q", spec)
	}
	n, err := strconv.Atoi(spec)
	if err != nil {
		return "", p.bad("invalid literal length %q", spec)
	}
	p.literals++
	tooBig := n > p.r.lim.MaxLiteral || p.total+n > p.r.lim.MaxCommand || p.literals > p.r.lim.MaxLiterals
	if tooBig {
		if nonSync {
			// The client sends the data anyway; we will not read it.
			return "", &errFatal{code: "TOOBIG", text: fmt.Sprintf("literal of %d bytes is over the limit of %d", n, p.r.lim.MaxLiteral)}
		}
		return "", &errWire{code: "TOOBIG", text: fmt.Sprintf("literal of %d bytes is over the limit of %d", n, p.r.lim.MaxLiteral)}
	}
	if !nonSync && p.r.cont != nil {
		if err := p.r.cont(); err != nil {
			return "", err
		}
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(p.r.br, buf); err != nil {
		return "", err
	}
	p.total += n
	// The command continues on the next line (maybe empty: the end of the command).
	line, err := readLine(p.r.br, p.r.lim.MaxLine)
	if err != nil {
		return "", err
	}
	p.total += len(line) + 2
	if p.total > p.r.lim.MaxCommand {
		return "", &errFatal{code: "TOOBIG", text: fmt.Sprintf("command longer than %d bytes", p.r.lim.MaxCommand)}
	}
	p.line, p.pos = line, 0
	return string(buf), nil
}

func (p *parser) takeWhile(ok func(byte) bool) string {
	start := p.pos
	for p.pos < len(p.line) && ok(p.line[p.pos]) {
		p.pos++
	}
	return p.line[start:p.pos]
}

// isAtomChar follows RFC 3501 ATOM-CHAR: any CHAR except atom-specials.
func isAtomChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// isAstringChar is ATOM-CHAR plus resp-specials (']').
func isAstringChar(c byte) bool { return c == ']' || isAtomChar(c) }

// isTagChar is ASTRING-CHAR except '+'.
func isTagChar(c byte) bool { return c != '+' && isAstringChar(c) }

// quote renders s as an IMAP quoted string; ok is false when s cannot be quoted
// (CR, LF, NUL or 8-bit) and must go as a literal.
func quote(s string) (string, bool) {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0 || c == '\r' || c == '\n' || c >= 0x80:
			return "", false
		case c == '"' || c == '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String(), true
}
