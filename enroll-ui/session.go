package enrollui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// CookieName is the session cookie.
const CookieName = "imapgate_ui"

// maxSessions bounds the store: visitors without a login get a session too
// (for the login form's CSRF token), and they must not fill memory.
const maxSessions = 1000

// session is one browser's state. It holds no PIN.
type session struct {
	id       string
	csrf     string
	operator string // empty until logged in
	expires  time.Time
}

func (s *session) authed() bool { return s.operator != "" }

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl}
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("enroll-ui: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// get returns the live session for the cookie value, or nil.
func (st *sessions) get(id string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.m[id]
	if s == nil {
		return nil
	}
	if time.Now().After(s.expires) {
		delete(st.m, id)
		return nil
	}
	return s
}

// create starts an anonymous session. A full store first drops expired
// sessions, then the oldest anonymous one; logged-in sessions are never
// dropped for a stranger's, and a login page opened a moment ago outlives
// older strangers'.
func (st *sessions) create() *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= maxSessions {
		now := time.Now()
		for id, s := range st.m {
			if now.After(s.expires) {
				delete(st.m, id)
			}
		}
	}
	if len(st.m) >= maxSessions {
		var oldest *session
		for _, s := range st.m {
			if !s.authed() && (oldest == nil || s.expires.Before(oldest.expires)) {
				oldest = s
			}
		}
		if oldest != nil {
			delete(st.m, oldest.id)
		}
	}
	s := &session{id: randomToken(32), csrf: randomToken(32), expires: time.Now().Add(15 * time.Minute)}
	st.m[s.id] = s
	return s
}

// login replaces s by a new logged-in session (a new ID, so an ID planted
// before the login is worth nothing).
func (st *sessions) login(old *session, operator string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	if old != nil {
		delete(st.m, old.id)
	}
	s := &session{id: randomToken(32), csrf: randomToken(32), operator: operator, expires: time.Now().Add(st.ttl)}
	st.m[s.id] = s
	return s
}

func (st *sessions) logout(s *session) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, s.id)
}

func (srv *Server) setCookie(w http.ResponseWriter, s *session) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: s.id, Path: "/", HttpOnly: true, Secure: srv.cfg.TLS(),
		SameSite: http.SameSiteStrictMode, Expires: s.expires,
	})
}

func equalSecret(a, b string) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
