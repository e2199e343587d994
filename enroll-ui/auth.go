package enrollui

import (
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"
	"golang.org/x/crypto/bcrypt"
)

type loginData struct {
	Password bool   // operators log in with name and password
	Name     string // the name typed, shown again after a failure
}

// loginPage takes the access token from the start-up link, or shows the
// login form.
func (s *Server) loginPage(c *gin.Context) {
	if s.accessToken != "" {
		tok, given := c.GetQuery("token")
		if given {
			if !equalSecret(tok, s.accessToken) {
				s.audit(action{Operator: "-", Action: "login-failed", Result: "failed", Reason: "wrong access token"})
				s.renderStatus(c, http.StatusUnauthorized, "login", page{Title: "Log in",
					Error: "This link's access token is not the one this UI printed when it started. Copy the link from the terminal where imapgate enroll-ui runs.", Data: loginData{}})
				return
			}
			s.startSession(c, s.cfg.Operator)
			return
		}
	}
	if sessionOf(c).authed() {
		c.Redirect(http.StatusSeeOther, "/")
		return
	}
	s.render(c, "login", page{Title: "Log in", Data: loginData{Password: s.accessToken == ""}})
}

var dummyHash struct {
	once sync.Once
	h    []byte
}

// loginPost checks an operator's name and password.
func (s *Server) loginPost(c *gin.Context) {
	if s.accessToken != "" {
		s.renderStatus(c, http.StatusUnauthorized, "login", page{Title: "Log in",
			Error: "This UI is opened with the link printed at start-up, not with a password.", Data: loginData{}})
		return
	}
	name, pw := c.PostForm("name"), c.PostForm("password")
	var hash []byte
	for _, op := range s.cfg.Operators {
		if op.Name == name {
			hash = []byte(op.PasswordHash)
		}
	}
	if hash == nil {
		// Spend the same time on an unknown name as on a wrong password.
		dummyHash.once.Do(func() { dummyHash.h, _ = bcrypt.GenerateFromPassword([]byte("imapgate-dummy-password"), 12) })
		hash = dummyHash.h
		name = ""
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pw)) != nil || name == "" {
		typed := cleanTypedName(c.PostForm("name"))
		s.audit(action{Operator: typed, Action: "login-failed", Result: "failed", Reason: "wrong name or password"})
		// Unknown names share one counter; a known name has its own, so
		// one operator's typos never slow another down.
		s.throttle.failed(c.Request.Context(), name)
		s.renderStatus(c, http.StatusUnauthorized, "login", page{Title: "Log in",
			Error: "Wrong name or password. Type them again; an administrator can reset a password in the enroll-ui config.",
			Data:  loginData{Password: true, Name: typed}})
		return
	}
	s.throttle.succeeded(name)
	s.startSession(c, name)
}

func (s *Server) startSession(c *gin.Context, operator string) {
	sess := s.sessions.login(sessionOf(c), operator)
	s.setCookie(c.Writer, sess)
	s.audit(action{Operator: operator, Action: "login", Result: "ok"})
	if c.Request.Method == http.MethodGet {
		// The start-up link may be opened from another site (a chat in the
		// browser): a redirect would then still count as cross-site and the
		// SameSite=Strict cookie would not come along. A page of our own that
		// moves on is same-site, and drops the token from the address bar.
		s.render(c, "continue", page{Title: "Logged in", Goto: "/"})
		return
	}
	c.Redirect(http.StatusSeeOther, "/")
}

func (s *Server) logout(c *gin.Context) {
	sess := sessionOf(c)
	s.sessions.logout(sess)
	http.SetCookie(c.Writer, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.cfg.TLS(), SameSite: http.SameSiteStrictMode})
	c.Redirect(http.StatusSeeOther, "/login")
}
