package crl_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/crl"
	"github.com/imapgate/imapgate/testenv"
)

// TestMaxAgeConfirmation: over plain http a 304 or a replay of the same CRL does not
// confirm it for max_age (anybody on the path can send those); only the signed
// thisUpdate counts. Over https the CA's own 304 confirms it.
func TestMaxAgeConfirmation(t *testing.T) {
	pki := testenv.NewPKI(t)
	now := time.Now()
	old := pki.CRL(t, testenv.CRLOptions{ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(time.Hour)})
	handler := func(etag bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if etag {
				if r.Header.Get("If-None-Match") == `"1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				w.Header().Set("ETag", `"1"`)
			}
			w.Write(old)
		}
	}
	for _, tc := range []struct {
		name      string
		tls, etag bool
		fresh     bool
	}{
		{"http_304", false, true, false},
		{"http_replay", false, false, false},
		{"https_304", true, true, true},
		{"https_same_bytes", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(handler(tc.etag))
			if tc.tls {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			store, err := crl.NewStore(crl.Options{URL: srv.URL + "/crl", Issuer: pki.Intermediate, MaxAge: time.Hour, HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if _, err := store.Refresh(context.Background()); err != nil {
					t.Fatalf("poll %d: %v", i, err)
				}
			}
			_, err = store.Fresh(time.Now())
			if tc.fresh && err != nil {
				t.Fatalf("confirmed by the CA over https, yet: %v", err)
			}
			if !tc.fresh && !errors.Is(err, crl.ErrStale) {
				t.Fatalf("a CRL signed 2h ago, max_age 1h, only replayed over http: Fresh = %v, want ErrStale", err)
			}
		})
	}
}

// TestFetchDrip: a server that drips its answer a byte a second cannot hold a poll for
// longer than FetchTimeout, even with an HTTP client without a timeout of its own.
func TestFetchDrip(t *testing.T) {
	pki := testenv.NewPKI(t)
	der := pki.CRL(t, testenv.CRLOptions{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(der)))
		for _, c := range der {
			w.Write([]byte{c})
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	}))
	defer srv.Close()
	store, err := crl.NewStore(crl.Options{URL: srv.URL, Issuer: pki.Intermediate, FetchTimeout: 300 * time.Millisecond, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := store.Refresh(context.Background()); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dripped CRL: %v, want the fetch deadline", err)
		}
	case <-time.After(60 * time.Second): // a hang, not a timing assertion
		t.Fatal("Refresh still reading a dripping server after a minute")
	}
}

// TestFetchETagHostile: an ETag that is not an entity-tag — CR or LF through an
// obs-fold, a control character, 10 KB — is never echoed in If-None-Match; the store
// uses a hash of the content instead, and keeps working.
func TestFetchETagHostile(t *testing.T) {
	pki := testenv.NewPKI(t)
	der := pki.CRL(t, testenv.CRLOptions{})
	for _, tc := range []struct{ name, header string }{
		{"crlf_obs_fold", "ETag: \"a\r\n X-Injected: 1\"\r\n"},
		{"bare_cr", "ETag: \"a\rb\"\r\n"},
		{"control", "ETag: \"a\x01b\"\r\n"},
		{"unquoted", "ETag: abc\r\n"},
		{"huge", "ETag: \"" + strings.Repeat("a", 10_000) + "\"\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var sent []string
			url := rawHTTP(t, func(req *http.Request) string {
				mu.Lock()
				sent = append(sent, req.Header.Get("If-None-Match"))
				mu.Unlock()
				return "HTTP/1.1 200 OK\r\n" + tc.header + fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n\r\n", len(der)) + string(der)
			})
			store, err := crl.NewStore(crl.Options{URL: url, Issuer: pki.Intermediate})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				store.Refresh(context.Background()) // a header Go refuses to read is a failed poll, fine
			}
			mu.Lock()
			defer mu.Unlock()
			for _, v := range sent {
				if strings.ContainsAny(v, "\r\n\x01") || len(v) > 256 || strings.Contains(v, "aaaa") || strings.Contains(v, "abc") {
					t.Fatalf("If-None-Match echoed a hostile ETag: %q", v)
				}
			}
			if len(sent) != 3 {
				t.Fatalf("%d requests, want 3", len(sent))
			}
		})
	}
}

// rawHTTP serves answer(request) verbatim on 127.0.0.1, one request a connection, so a
// test can send what net/http's server would clean up.
func rawHTTP(t *testing.T, answer func(*http.Request) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				c.Write([]byte(answer(req)))
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/crl"
}

// TestFetchRedirectDowngrade: an https CRL URL that redirects to http is refused, and
// the http location is never asked.
func TestFetchRedirectDowngrade(t *testing.T) {
	pki := testenv.NewPKI(t)
	der := pki.CRL(t, testenv.CRLOptions{})
	var plainHits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		w.Write(der)
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/crl", http.StatusFound) // https → https is fine
		default:
			http.Redirect(w, r, plain.URL+"/crl", http.StatusFound)
		}
	}))
	defer secure.Close()
	store, err := crl.NewStore(crl.Options{URL: secure.URL + "/crl", Issuer: pki.Intermediate, HTTPClient: secure.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "redirect from https to http") {
		t.Fatalf("https→http redirect: %v", err)
	}
	if plainHits.Load() != 0 || store.Load() != nil {
		t.Fatal("the CRL was fetched over http")
	}
}

// TestFetchOversized: a body over the limit is refused, whether the server announces
// its length (refused before reading) or streams it chunked (refused at the limit).
func TestFetchOversized(t *testing.T) {
	pki := testenv.NewPKI(t)
	var wrote atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/announced" {
			w.Header().Set("Content-Length", fmt.Sprint(int64(crl.MaxCRLSize)*2))
		}
		chunk := make([]byte, 1<<20)
		for wrote.Load() < int64(crl.MaxCRLSize)*2 {
			n, err := w.Write(chunk)
			wrote.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	for _, path := range []string{"/announced", "/chunked"} {
		wrote.Store(0)
		store, err := crl.NewStore(crl.Options{URL: srv.URL + path, Issuer: pki.Intermediate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "limit") && !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("%s: oversized body: %v", path, err)
		}
	}
}
