package enrollui

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/pkcs11"
)

// tokenView is one token as the pages show it.
type tokenView struct {
	Slot         uint
	Label        string
	Manufacturer string
	Model        string
	Serial       string
	Profile      string
	Initialized  bool
	PINLocked    bool
	PINFinalTry  bool
	PINCountLow  bool
	// DefaultPIN: the token asks for its PIN to be changed (the factory
	// state of many cards). A PIN cannot be tested without spending a try,
	// so a default PIN on a token that does not say so is not detected.
	DefaultPIN bool
	SOForWrite bool // a YubiKey: enrollment needs the management key
	UsePUK     bool // unblock with the PUK (YubiKey) rather than the SO PIN
	Creds      []credView
	// Unfinished: a key imapgate made has no certificate — an enrollment
	// was interrupted (the token pulled out); the next one removes it.
	Unfinished bool
	// LeftKey: the key is one this UI's failed enrollment recorded, so
	// the page offers to remove it (Remove the leftover key).
	LeftKey *leftKeyView
	Busy    bool
	Problem string // the token's objects could not be read
}

// credView is a credential found on a token (from its certificate, readable
// without a PIN).
type credView struct {
	User     string
	Serial   string
	NotAfter time.Time
	Expired  bool
}

// Blank says the token holds no imapgate credential.
func (t tokenView) Blank() bool { return len(t.Creds) == 0 }

// busyTokens are the tokens an action is running on, by serial: one action
// per token at a time, and the watcher leaves them alone.
type busyTokens struct {
	mu sync.Mutex
	m  map[string]bool
}

func (b *busyTokens) acquire(serial string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]bool{}
	}
	if b.m[serial] {
		return false
	}
	b.m[serial] = true
	return true
}

func (b *busyTokens) release(serial string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, serial)
}

func (b *busyTokens) is(serial string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[serial]
}

// tokenWatch re-reads the module's token list every interval, so a token
// inserted or pulled out shows within two seconds. A token's objects are read
// once when it appears and again after an action on it.
type tokenWatch struct {
	mod      *pkcs11.Module
	interval time.Duration
	busy     *busyTokens
	left     *leftKeys
	log      *slog.Logger

	scanMu sync.Mutex // one scan at a time
	mu     sync.Mutex
	list   []tokenView
	err    string
	at     time.Time
	creds  map[string]tokenView // by serial+label: the last full read
	stale  map[string]bool      // creds to read again once the token is not busy
	quit   chan struct{}
	once   sync.Once
}

func newTokenWatch(mod *pkcs11.Module, interval time.Duration, busy *busyTokens, left *leftKeys, log *slog.Logger) *tokenWatch {
	return &tokenWatch{mod: mod, interval: interval, busy: busy, left: left, log: log, creds: map[string]tokenView{}, stale: map[string]bool{}, quit: make(chan struct{})}
}

func (w *tokenWatch) run() {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
			w.scan()
		}
	}
}

func (w *tokenWatch) stop() { w.once.Do(func() { close(w.quit) }) }

// invalidate makes the next scan read the token's objects again once the
// token is not busy; until then the last read stands (a scan during the
// action must not show the token without its credential). The next look at
// the list scans at once, so a page loaded right after an action shows its
// result.
func (w *tokenWatch) invalidate(serial string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.at = time.Time{}
	for k := range w.creds {
		if strings.HasPrefix(k, serial+"\x00") {
			w.stale[k] = true
		}
	}
}

// current returns the list, scanning first when it is older than the interval.
func (w *tokenWatch) current() ([]tokenView, string) {
	w.mu.Lock()
	fresh := time.Since(w.at) < w.interval
	w.mu.Unlock()
	if !fresh {
		w.scan()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.list, w.err
}

func (w *tokenWatch) find(serial string) (tokenView, bool) {
	list, _ := w.current()
	for _, t := range list {
		if t.Serial == serial && serial != "" {
			return t, true
		}
	}
	return tokenView{}, false
}

func (w *tokenWatch) scan() {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	infos, err := w.mod.Tokens()
	if err != nil {
		w.mu.Lock()
		w.list, w.err, w.at = nil, "The card reader's module does not answer: "+err.Error()+". Check the reader is plugged in (and pcscd runs).", time.Now()
		w.mu.Unlock()
		return
	}
	prof := w.mod.Profile()
	var out []tokenView
	seen := map[string]bool{}
	for _, ti := range infos {
		v := tokenView{Slot: ti.Slot, Label: ti.Label, Manufacturer: ti.Manufacturer, Model: ti.Model, Serial: ti.Serial,
			Profile: prof.Name, Initialized: ti.Flags.Initialized, PINLocked: ti.Flags.PINLocked,
			PINFinalTry: ti.Flags.PINFinalTry, PINCountLow: ti.Flags.PINCountLow, DefaultPIN: ti.Flags.PINToBeChanged,
			SOForWrite: prof.SOForWrite, UsePUK: prof.UnblockWithPUK}
		if !v.Initialized {
			// SoftHSM's spare slot and blank cards: nothing to do here.
			continue
		}
		key := ti.Serial + "\x00" + ti.Label
		seen[key] = true
		v.Busy = w.busy.is(ti.Serial)
		w.mu.Lock()
		old, known := w.creds[key]
		stale := w.stale[key]
		w.mu.Unlock()
		if v.Busy || known && !stale {
			v.Creds, v.Unfinished, v.LeftKey, v.Problem = old.Creds, old.Unfinished, old.LeftKey, old.Problem
		} else {
			v.Creds, v.Unfinished, v.LeftKey, v.Problem = w.readCreds(ti.Serial)
			w.mu.Lock()
			w.creds[key] = v
			delete(w.stale, key)
			w.mu.Unlock()
		}
		out = append(out, v)
	}
	w.mu.Lock()
	for k := range w.creds {
		if !seen[k] {
			delete(w.creds, k)
			delete(w.stale, k)
		}
	}
	w.list, w.err, w.at = out, "", time.Now()
	w.mu.Unlock()
}

// readCreds reads the token's certificates, whether a key of an
// interrupted enrollment is on it, and whether that is the key a failed job
// of this UI recorded, without a login. This runs when a token appears, so
// a card put back after a failed enrollment shows its leftover key at once.
func (w *tokenWatch) readCreds(serial string) ([]credView, bool, *leftKeyView, string) {
	tok, err := w.mod.OpenToken(serial)
	if err != nil {
		return nil, false, nil, err.Error()
	}
	defer tok.Close()
	objs, err := tok.Objects()
	if err != nil {
		return nil, false, nil, err.Error()
	}
	left, gone := w.left.seen(serial, objs)
	if gone != "" {
		w.log.Info("enroll-ui: the recorded leftover key needs no removal", "token_serial", serial, "why", gone)
	} else if left != nil {
		w.log.Info("enroll-ui: the token is back with the key its interrupted enrollment left", "token_serial", serial, "key_id", left.IDHex)
	}
	return credentialsOf(tok.Profile(), objs), strayKey(tok.Profile(), objs), left, ""
}

// strayKey says whether a public key imapgate made (labelled imapgate-…;
// public keys are readable without a login) has no certificate of its ID:
// what a token pulled out mid-enrollment keeps. Where key slots are fixed
// the next key generation overwrites the slot, so it is not looked for.
func strayKey(prof *pkcs11.Profile, objs []pkcs11.Object) bool {
	if prof.FixedKeyID != nil {
		return false
	}
	certs := map[string]bool{}
	for _, o := range objs {
		if o.Class == pkcs11.ClassCertificate {
			certs[string(o.ID)] = true
		}
	}
	for _, o := range objs {
		if o.Class == pkcs11.ClassPublicKey && len(o.ID) > 0 && strings.HasPrefix(o.Label, pkcs11.LabelPrefix+"-") && !certs[string(o.ID)] {
			return true
		}
	}
	return false
}

// credentialsOf picks the user certificates imapgate put on a token: not a
// CA, labelled imapgate-… (or, where labels are fixed, in the fixed key slot).
func credentialsOf(prof *pkcs11.Profile, objs []pkcs11.Object) []credView {
	var out []credView
	for _, o := range objs {
		if o.Class != pkcs11.ClassCertificate || o.Cert == nil || o.Cert.IsCA {
			continue
		}
		if prof.FixedKeyID != nil {
			if !bytes.Equal(o.ID, prof.FixedKeyID) {
				continue
			}
		} else if !strings.HasPrefix(o.Label, pkcs11.LabelPrefix+"-") {
			continue
		}
		user := o.Cert.Subject.CommonName
		if len(o.Cert.EmailAddresses) > 0 {
			user = o.Cert.EmailAddresses[0]
		}
		out = append(out, credView{User: user, Serial: pkcs11.SerialHex(o.Cert.SerialNumber), NotAfter: o.Cert.NotAfter,
			Expired: time.Now().After(o.Cert.NotAfter)})
	}
	return out
}

type tokensData struct {
	Tokens []tokenView
	Module pkcs11.ModuleInfo
}

func (s *Server) tokensData() (tokensData, string) {
	list, problem := s.tokens.current()
	return tokensData{Tokens: list, Module: s.mod.Info()}, problem
}

func (s *Server) tokensPage(c *gin.Context) {
	d, problem := s.tokensData()
	s.render(c, "tokens", page{Title: "Tokens", Nav: "tokens", Error: problem, Data: d})
}

// tokensFragment is the table body the script swaps in every second.
func (s *Server) tokensFragment(c *gin.Context) {
	d, problem := s.tokensData()
	s.fragment(c, "tokens", "token-rows", page{Error: problem, Data: d})
}

// tokenParam finds the token named by the "token" form or query field.
func (s *Server) tokenParam(c *gin.Context) (tokenView, bool) {
	serial := c.Query("token")
	if c.Request.Method == http.MethodPost {
		serial = c.PostForm("token")
	}
	t, ok := s.tokens.find(serial)
	if !ok {
		s.renderStatus(c, http.StatusNotFound, "error", page{Title: "Token not found",
			Error: "No token with serial " + quoteOr(serial, "(none)") + " is in the reader now. Insert it and pick it again from the Tokens page."})
	}
	return t, ok
}

func quoteOr(s, empty string) string {
	if s == "" {
		return empty
	}
	return "“" + s + "”"
}
