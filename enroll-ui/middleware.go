package enrollui

import (
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// The Content-Security-Policy of every answer: only our own script, style
// and images; no frames, no plugins, forms post only to us.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const ctxSession = "session"

// headers sets the security headers on every answer.
func (s *Server) headers(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// The login link carries the access token: never let it leave in a Referer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if strings.HasPrefix(c.Request.URL.Path, "/static/") {
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
	}
	if s.cfg.TLS() {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.Next()
}

// hostCheck refuses a request whose Host is not the listen address (or a
// configured name): a page on another site that resolves its own name to
// 127.0.0.1 (DNS rebinding) must not reach the UI.
func (s *Server) hostCheck(c *gin.Context) {
	if !s.hostAllowed(c.Request.Host) {
		s.log.Warn("enroll-ui: refused a request for another host name", "host", c.Request.Host, "remote", c.Request.RemoteAddr)
		c.Data(http.StatusMisdirectedRequest, "text/plain; charset=utf-8",
			[]byte("This UI answers only as "+s.addr()+". Open that address.\n"))
		c.Abort()
		return
	}
	c.Next()
}

func (s *Server) hostAllowed(host string) bool {
	if host == "" {
		return false
	}
	for _, h := range s.hosts() {
		if strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

// hosts are the acceptable Host values: the bound address and each
// configured name with its port.
func (s *Server) hosts() []string {
	addr := s.addr()
	out := []string{addr}
	_, port, _ := net.SplitHostPort(addr)
	for _, h := range s.cfg.Hosts {
		if _, _, err := net.SplitHostPort(h); err == nil {
			out = append(out, h)
		} else {
			out = append(out, net.JoinHostPort(h, port))
		}
	}
	return out
}

// maxForm bounds a request body: the largest form (the enrollment) is well
// under 2 KiB.
const maxForm = 64 << 10

// limitBody refuses a body over maxForm before anything parses it.
func (s *Server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > maxForm {
		c.Data(http.StatusRequestEntityTooLarge, "text/plain; charset=utf-8", []byte("form too large\n"))
		c.Abort()
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxForm)
	c.Next()
}

// withSession finds the browser's session, or starts one for the login page.
func (s *Server) withSession(c *gin.Context) {
	var sess *session
	if ck, err := c.Request.Cookie(CookieName); err == nil {
		sess = s.sessions.get(ck.Value)
	}
	if sess == nil && c.Request.URL.Path == "/login" {
		// Only the login page needs a session before login (its form's
		// CSRF token); every other page redirects there or is static, so
		// cookieless requests elsewhere fill no store.
		sess = s.sessions.create()
		s.setCookie(c.Writer, sess)
	}
	if sess == nil {
		c.Next()
		return
	}
	c.Set(ctxSession, sess)
	c.Next()
}

// csrfCheck refuses a POST without the session's CSRF token, or from a page
// of another origin.
func (s *Server) csrfCheck(c *gin.Context) {
	if c.Request.Method != http.MethodPost {
		c.Next()
		return
	}
	sess := sessionOf(c)
	if o := c.Request.Header.Get("Origin"); o != "" && o != "null" && o != s.origin() {
		s.refuseCSRF(c, "origin "+o)
		return
	}
	if !equalSecret(c.PostForm("csrf"), sess.csrf) {
		s.refuseCSRF(c, "missing or wrong CSRF token")
		return
	}
	c.Next()
}

func (s *Server) refuseCSRF(c *gin.Context, why string) {
	s.log.Warn("enroll-ui: refused a form", "path", c.Request.URL.Path, "why", why)
	s.renderStatus(c, http.StatusForbidden, "error", page{Title: "Form refused",
		Error: "This form was not sent by this UI's own page (or the page was open too long). Nothing was done. Go back, reload the page and try again."})
	c.Abort()
}

// requireLogin sends a browser without a logged-in session to the login page.
func (s *Server) requireLogin(c *gin.Context) {
	if !sessionOf(c).authed() {
		if c.Request.Method == http.MethodGet && !strings.HasSuffix(c.Request.URL.Path, ".json") &&
			!strings.HasSuffix(c.Request.URL.Path, "/fragment") {
			c.Redirect(http.StatusSeeOther, "/login")
		} else {
			c.Data(http.StatusUnauthorized, "text/plain; charset=utf-8", []byte("log in first\n"))
		}
		c.Abort()
		return
	}
	c.Next()
}

// requireAdmin lets through only when an admin credential is configured.
func (s *Server) requireAdmin(c *gin.Context) {
	if s.admin == nil {
		s.renderStatus(c, http.StatusForbidden, "error", page{Title: "Revocation needs an admin credential",
			Error: "This help desk PC has no admin credential (admin_cred in the config), so it cannot revoke. Ask an administrator to revoke the certificate (imapgate cert revoke SERIAL)."})
		c.Abort()
		return
	}
	c.Next()
}

// accessLog logs each request without its query string (the login link's
// access token is in it) and without any form field.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	s.log.Debug("enroll-ui: request", "method", c.Request.Method, "path", c.Request.URL.Path, "remote", c.Request.RemoteAddr,
		"status", c.Writer.Status(), "took", time.Since(start).Round(time.Millisecond))
}

// recovery turns a panic into a plain 500 page; the panic value may hold
// anything, so it is logged without the request.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("enroll-ui: handler panic", "path", c.Request.URL.Path, "panic", slog.AnyValue(r))
			c.AbortWithStatus(http.StatusInternalServerError)
		}
	}()
	c.Next()
}

func sessionOf(c *gin.Context) *session {
	v, _ := c.Get(ctxSession)
	s, _ := v.(*session)
	if s == nil {
		return &session{}
	}
	return s
}
