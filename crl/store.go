package crl

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxCRLSize bounds a CRL's DER, fetched or read: room for a million entries. An entry in
// the CA's format — a 128-bit random serial (a 16- or 17-byte INTEGER), a UTCTime and a
// reasonCode — takes 50 bytes, so a million are 50 MB; RFC 5280's largest entry (a
// 20-byte serial, a GeneralizedTime, a reasonCode) takes 55, 55 MB a million. 56 MiB
// (58.7 MB) leaves 3.7 MB (6 %) over the latter. A PEM CRL may take the base64 of that.
const MaxCRLSize = 56 << 20

// Options configure a Store. Exactly one of URL and File is set.
type Options struct {
	// URL is the CA's CRL endpoint, http(s)://…/crl (DER or PEM).
	URL string
	// File is a local CRL file (DER or PEM), polled every Interval: read when its stat
	// changed, and at least once a minute (see filestamp.go).
	File string
	// Issuer is the CA certificate that signs the CRL.
	Issuer *x509.Certificate
	// Interval between polls; default 5s.
	Interval time.Duration
	// Grace is how long past nextUpdate the CRL is still used; default 1h.
	Grace time.Duration
	// MaxAge, when set, also makes the CRL stale when no poll has confirmed it for
	// this long (the CA may have a newer one we cannot reach). Over https a poll that
	// finds the CRL unchanged (304, or the same bytes) confirms it: the CA's server said
	// so. Over plain http anybody on the path can answer 304 or replay the CRL, so there
	// only the CRL's own signed thisUpdate counts: the CRL is confirmed as of the
	// thisUpdate of the newest CRL seen, and MaxAge must exceed the CA's re-signing
	// period. A file is confirmed by every poll that reads it, or finds its stat
	// unchanged.
	MaxAge time.Duration
	// StateFile, when set, keeps the highest CRL number installed per issuer across
	// restarts and reloads (see stateFile); a lower one is refused even by a fresh
	// process. One file may serve every Store of a process.
	StateFile string
	// FetchTimeout bounds one whole poll — connection, headers and body — however the
	// server paces it; default 30s. (HTTPClient's own Timeout applies too.)
	FetchTimeout time.Duration
	// HTTPClient fetches URL; default a client with a 10s timeout.
	HTTPClient *http.Client
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Store holds the current snapshot of one issuer's CRL and refreshes it.
type Store struct {
	opts      Options
	client    *http.Client // opts.HTTPClient with checkRedirect
	plainHTTP bool         // opts.URL is http://: a 304 or a replay confirms nothing
	cur       atomic.Pointer[Snapshot]
	confirmed atomic.Int64 // unix nanos of the last poll that confirmed the current CRL
	failures  atomic.Int64 // consecutive failed polls

	mu        sync.Mutex // serialises Refresh and guards subs and staleSubs
	subs      []func(*Snapshot)
	staleSubs []func(error)
	stale     bool     // Run's view: Fresh failed at its last check
	floor     *big.Int // highest CRL number in StateFile (guarded by mu)
	unsaved   bool     // the current CRL's number is not in StateFile yet (guarded by mu)

	lastRead  fileRead         // the last full read of File (guarded by mu; see filestamp.go)
	fileReads int              // full reads of File, for the tests (guarded by mu)
	clock     func() time.Time // time.Now; the tests move it to age lastRead
}

// NewStore validates opts and returns a Store with no snapshot yet; call Refresh or
// Run to load one.
func NewStore(opts Options) (*Store, error) {
	var errs []error
	if (opts.URL == "") == (opts.File == "") {
		errs = append(errs, errors.New("crl: set exactly one of url and file"))
	}
	if opts.URL != "" {
		u, err := url.Parse(opts.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("crl: url %q: want http(s)://host/crl", opts.URL))
		}
	}
	if opts.Issuer == nil {
		errs = append(errs, errors.New("crl: no issuer certificate: set the CA certificate that signs the CRL"))
	}
	if opts.Interval < 0 || opts.Grace < 0 || opts.MaxAge < 0 || opts.FetchTimeout < 0 {
		errs = append(errs, errors.New("crl: interval, grace, max_age and fetch_timeout must not be negative"))
	}
	var floor *big.Int
	if opts.StateFile != "" && opts.Issuer != nil {
		var err error
		if floor, err = loadFloor(opts.StateFile, opts.Issuer); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Grace == 0 {
		opts.Grace = time.Hour
	}
	if opts.FetchTimeout == 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	client := *opts.HTTPClient
	client.CheckRedirect = checkRedirect
	return &Store{opts: opts, client: &client, plainHTTP: strings.HasPrefix(strings.ToLower(opts.URL), "http:"), floor: floor, clock: time.Now}, nil
}

// checkRedirect follows at most three redirects, and none from https to http: a CRL
// fetched over https must not come over a channel anybody on the path can write to.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("crl: more than 3 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("crl: refusing a redirect from https to %s (%s): point the CRL url at the https location", req.URL.Scheme, req.URL.Redacted())
	}
	return nil
}

// Issuer is the configured CRL issuer.
func (s *Store) Issuer() *x509.Certificate { return s.opts.Issuer }

// Interval is the poll interval.
func (s *Store) Interval() time.Duration { return s.opts.Interval }

// Load returns the current snapshot, or nil before the first successful load.
func (s *Store) Load() *Snapshot { return s.cur.Load() }

// Fresh returns the current snapshot if it may be relied on at now, or an error wrapping
// ErrStale: fail closed.
func (s *Store) Fresh(now time.Time) (*Snapshot, error) {
	snap := s.cur.Load()
	if err := snap.Stale(now, s.opts.Grace); err != nil {
		return nil, err
	}
	if s.opts.MaxAge > 0 {
		last := time.Unix(0, s.confirmed.Load())
		if now.Sub(last) > s.opts.MaxAge {
			return nil, fmt.Errorf("%w: CRL from %q not confirmed since %s (max_age %s): check that the CA's /crl is reachable", ErrStale, s.opts.Issuer.Subject.CommonName, last.UTC().Format(time.RFC3339), s.opts.MaxAge)
		}
	}
	return snap, nil
}

// Subscribe calls fn with every newly installed snapshot, from the polling goroutine.
func (s *Store) Subscribe(fn func(*Snapshot)) {
	s.mu.Lock()
	s.subs = append(s.subs, fn)
	s.mu.Unlock()
}

// OnStale calls fn, from the polling goroutine (Run), each time the CRL turns stale:
// when Fresh fails at a check after it succeeded at the one before (or at the first
// check). Fresh refuses new connections by itself; this is for what was let in on
// the strength of the CRL before, such as live sessions, which must end too (fail
// closed: a CRL that cannot be renewed cannot tell about revocations either).
func (s *Store) OnStale(fn func(err error)) {
	s.mu.Lock()
	s.staleSubs = append(s.staleSubs, fn)
	s.mu.Unlock()
}

// watch checks, after each poll, whether the CRL turned stale or fresh again.
func (s *Store) watch(now time.Time) {
	_, err := s.Fresh(now)
	switch {
	case err != nil && !s.stale:
		s.stale = true
		s.opts.Logger.Error("crl stale: new connections are refused and sessions that relied on it end", "source", s.source(), "error", err.Error())
		s.mu.Lock()
		subs := slices.Clone(s.staleSubs)
		s.mu.Unlock()
		for _, fn := range subs {
			fn(err)
		}
	case err == nil && s.stale:
		s.stale = false
		s.opts.Logger.Info("crl fresh again", "source", s.source(), "number", s.Load().NumberString())
	}
}

// Refresh polls the source once. It returns whether a new snapshot was installed.
func (s *Store) Refresh(ctx context.Context) (bool, error) {
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	etag := ""
	if cur != nil {
		etag = cur.ETag
	}
	data, newTag, notModified, err := s.fetch(ctx, etag)
	if err != nil {
		s.failures.Add(1)
		return false, err
	}
	now := time.Now()
	if notModified {
		if !s.plainHTTP {
			s.confirmed.Store(now.UnixNano())
		}
		s.failures.Store(0)
		s.save(cur, now)
		return false, nil
	}
	// A reload is paced; the first load, and a reload while the CRL in use is stale
	// (the CA's users are refused until it ends), run at full speed (see pace.go).
	var p *pacer
	if _, err := s.Fresh(start); cur != nil && err == nil {
		p = newPacer(ctx, start)
	}
	snap, err := parse(data, s.opts.Issuer, now, cur, p)
	if err != nil {
		s.failures.Add(1)
		return false, err
	}
	snap.ETag = newTag
	snap.loadTime, snap.paced = time.Since(start), p.sleptFor()
	// The highest number seen: the current CRL's, or the state file's after a restart.
	highest, from := s.floor, "recorded in "+s.opts.StateFile
	if cur != nil && cur.Number != nil && (highest == nil || cur.Number.Cmp(highest) > 0) {
		highest, from = cur.Number, "current"
	}
	if highest != nil && snap.Number != nil && snap.Number.Cmp(highest) < 0 {
		s.failures.Add(1)
		return false, fmt.Errorf("crl: refusing CRL number %s older than the %s %s (replayed or rolled-back CRL; if the CA was re-initialised and numbers from 1 again, remove its entry from the state file)", snap.Number, from, highest)
	}
	if highest != nil && snap.Number == nil {
		// The rollback check above needs a number: once the issuer numbers its CRLs,
		// an unnumbered one (an old CRL from before, or from another signing setup of
		// the same key) could otherwise replace a newer CRL and un-revoke.
		s.failures.Add(1)
		return false, fmt.Errorf("crl: refusing a CRL without a CRL number after CRL number %s (the rollback check needs one)", highest)
	}
	s.cur.Store(snap)
	s.confirm(snap, now)
	s.failures.Store(0)
	s.unsaved = snap.Number != nil
	s.save(snap, now)
	for _, fn := range s.subs {
		fn(snap)
	}
	return true, nil
}

// confirm records that a poll at now brought snap. Over plain http that proves only
// what the CRL itself signed: its thisUpdate (see Options.MaxAge).
func (s *Store) confirm(snap *Snapshot, now time.Time) {
	at := now
	if s.plainHTTP {
		at = snap.ThisUpdate
		if at.After(now) {
			at = now
		}
		if at.UnixNano() <= s.confirmed.Load() {
			return
		}
	}
	s.confirmed.Store(at.UnixNano())
}

// save records snap's number in the state file if it is not there yet. A failure is
// logged and retried at the next poll; the newer CRL stays installed (refusing it for
// a disk error would keep the older one, revocations missing).
func (s *Store) save(snap *Snapshot, now time.Time) {
	if s.opts.StateFile == "" || !s.unsaved || snap == nil || snap.Number == nil {
		return
	}
	if err := saveFloor(s.opts.StateFile, s.opts.Issuer, snap.Number, now); err != nil {
		s.opts.Logger.Error("crl: cannot record the CRL number; a restart would accept an older CRL until this is fixed", "source", s.source(), "error", err.Error())
		return
	}
	s.floor, s.unsaved = snap.Number, false
}

// Run polls every Interval until ctx ends. Errors are logged; the last good snapshot
// stays in place until it goes stale, which is checked after every poll and told to
// OnStale's subscribers.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		changed, err := s.Refresh(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.opts.Logger.Warn("crl refresh failed", "source", s.source(), "error", err.Error(), "consecutive_failures", s.failures.Load())
		case changed:
			snap := s.Load()
			s.opts.Logger.Info("crl loaded", "source", s.source(), "number", snap.NumberString(), "entries", snap.Len(), "entries_reused", snap.reused, "load_ms", snap.loadTime.Milliseconds(), "paced_ms", snap.paced.Milliseconds(), "next_update", snap.NextUpdate.UTC().Format(time.RFC3339))
		}
		if ctx.Err() == nil {
			s.watch(time.Now())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Store) source() string {
	if s.opts.URL != "" {
		return s.opts.URL
	}
	return s.opts.File
}

// maxBody bounds what a fetch reads: MaxCRLSize of DER, or its PEM (base64, a line
// break every 64 characters, header lines).
const maxBody = MaxCRLSize/3*4*65/64 + 4096

func (s *Store) fetch(ctx context.Context, etag string) (data []byte, newTag string, notModified bool, err error) {
	if s.opts.File != "" {
		at := s.clock() // before the stat and the read: a write after it is seen as one
		if s.lastRead.unchanged(statFile(s.opts.File), etag, at) {
			return nil, etag, true, nil
		}
		data, stamp, err := readFile(s.opts.File)
		if err != nil {
			return nil, "", false, fmt.Errorf("crl: read %s: %w", s.opts.File, err)
		}
		s.fileReads++
		tag := contentTag(data)
		s.lastRead = fileRead{stamp: stamp, tag: tag, at: at}
		return data, tag, tag == etag, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.opts.URL, nil)
	if err != nil {
		return nil, "", false, fmt.Errorf("crl: fetch %s: %w", s.opts.URL, err)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	req.Header.Set("Accept", "application/pkix-crl, application/x-pem-file;q=0.5")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, "", false, fmt.Errorf("crl: fetch %s: %w", s.opts.URL, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, etag, true, nil
	case http.StatusOK:
	default:
		return nil, "", false, fmt.Errorf("crl: fetch %s: HTTP %s", s.opts.URL, resp.Status)
	}
	if data, err = readLimited(resp.Body, resp.ContentLength); err != nil {
		return nil, "", false, fmt.Errorf("crl: fetch %s: %w", s.opts.URL, err)
	}
	tag := resp.Header.Get("ETag")
	if !validETag(tag) {
		// Without a usable ETag the server always answers 200; a content hash still
		// lets us skip re-verifying an unchanged CRL. Sending it back in
		// If-None-Match is harmless. A tag that is not an RFC 9110 entity-tag (CR, LF
		// or other controls, or over 256 bytes) is never echoed to the server.
		tag = contentTag(data)
		if tag == etag {
			return nil, etag, true, nil
		}
	}
	return data, tag, false, nil
}

// contentTag identifies a CRL's bytes, to tell an unchanged CRL from a new one. The
// signature is what protects a CRL, not this: two CRLs with one tag only ever keep the
// current, verified CRL in place, as whoever serves or writes the bytes can anyway (by
// replaying it, or answering 304). So it is maphash, keyed per process (tags are only
// compared within one), at a fifth of SHA-256's CPU: SHA-256 here hashed a 35 MB CRL a
// second time, next to the signature's hash, on every poll.
func contentTag(data []byte) string {
	return fmt.Sprintf(`"maphash-%016x"`, maphash.Bytes(contentSeed, data))
}

var contentSeed = maphash.MakeSeed()

// validETag reports whether tag is an entity-tag (RFC 9110 §8.8.3: [W/] DQUOTE
// *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text) of at most 256 bytes.
func validETag(tag string) bool {
	tag = strings.TrimPrefix(tag, "W/")
	if len(tag) < 2 || len(tag) > 256 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return false
	}
	for i := 1; i < len(tag)-1; i++ {
		if c := tag[i]; c < 0x21 || c == '"' || c == 0x7f {
			return false
		}
	}
	return true
}

// readFile reads a CRL file of at most maxBody bytes, and returns the stamp of the file
// it opened, taken before reading it.
func readFile(path string) ([]byte, fileStamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer f.Close()
	size := int64(-1)
	var stamp fileStamp
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size, stamp = fi.Size(), stampOf(fi)
	}
	data, err := readLimited(f, size)
	return data, stamp, err
}

// readLimited reads r to its end, at most maxBody bytes, into one buffer of size (when
// known, else -1) and a little: growing it as it fills (io.ReadAll's way) allocates,
// clears and copies a second CRL's worth of memory, 35 MB for a million entries.
func readLimited(r io.Reader, size int64) ([]byte, error) {
	if size > maxBody {
		return nil, fmt.Errorf("%d bytes, over the limit of %d (a CRL of a million entries fits)", size, maxBody)
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(size, 0)+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(r, maxBody+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxBody {
		return nil, fmt.Errorf("larger than %d bytes", maxBody)
	}
	return buf.Bytes(), nil
}

// ConfirmedAt is when a poll last confirmed the current CRL (zero before any).
func (s *Store) ConfirmedAt() time.Time {
	n := s.confirmed.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
