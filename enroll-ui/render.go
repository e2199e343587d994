package enrollui

import (
	"bytes"
	"crypto/x509"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/imapgate/imapgate/caclient"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// page is what every template gets. It never holds a PIN.
type page struct {
	Title    string
	Nav      string // the menu entry to highlight
	Error    string // a red box: what went wrong and what to do
	Notice   string // a green box
	CSRF     string
	Operator string
	Admin    bool
	Refresh  int    // seconds; a no-JavaScript refresh while something runs
	Goto     string // a same-site page to move on to at once
	Data     any
}

// templates maps a page name to its set (layout + partials + the page).
type templates map[string]*template.Template

var funcs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"day":  func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"join": strings.Join,
}

func parseTemplates() (templates, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("enroll-ui: templates: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := templates{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" || name == "partials" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("enroll-ui: template %s: %w", n, err)
		}
		out[name] = t
	}
	out["partials"] = base
	return out, nil
}

// render writes a whole page with status 200.
func (s *Server) render(c *gin.Context, name string, p page) {
	s.renderStatus(c, http.StatusOK, name, p)
}

func (s *Server) renderStatus(c *gin.Context, status int, name string, p page) {
	sess := sessionOf(c)
	p.CSRF, p.Operator, p.Admin = sess.csrf, sess.operator, s.admin != nil
	s.execute(c, status, name, "layout", p)
}

// fragment writes one named template of a page without the layout (the
// parts the script refreshes).
func (s *Server) fragment(c *gin.Context, set, name string, p page) {
	sess := sessionOf(c)
	p.CSRF, p.Operator, p.Admin = sess.csrf, sess.operator, s.admin != nil
	s.execute(c, http.StatusOK, set, name, p)
}

func (s *Server) execute(c *gin.Context, status int, set, name string, p page) {
	t := s.tmpl[set]
	var buf bytes.Buffer
	if t == nil {
		s.log.Error("enroll-ui: no template", "set", set)
		c.AbortWithStatus(http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("enroll-ui: render", "template", set+"/"+name, "error", err)
		c.AbortWithStatus(http.StatusInternalServerError)
		return
	}
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

func (s *Server) static(c *gin.Context) {
	name := strings.TrimPrefix(path.Clean(c.Param("file")), "/")
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil {
		c.AbortWithStatus(http.StatusNotFound)
		return
	}
	ct := "application/octet-stream"
	switch path.Ext(name) {
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".js":
		ct = "text/javascript; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	}
	c.Data(http.StatusOK, ct, b)
}

// credInfo is what the status page says about a role credential.
type credInfo struct {
	Subject  string
	NotAfter time.Time
	Serial   string
}

func readCred(dir string) (credInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, caclient.CertFile))
	if err != nil {
		return credInfo{}, fmt.Errorf("enroll-ui: credential %s: %w", dir, err)
	}
	certs, err := caclient.ParseCerts(b)
	if err != nil {
		return credInfo{}, fmt.Errorf("enroll-ui: credential %s: %s: %w", dir, caclient.CertFile, err)
	}
	return credFromCert(certs[0]), nil
}

func credFromCert(c *x509.Certificate) credInfo {
	return credInfo{Subject: c.Subject.String(), NotAfter: c.NotAfter, Serial: fmt.Sprintf("%X", c.SerialNumber)}
}

func readRoots(dir string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, caclient.RootsFile))
	if err != nil {
		return nil, fmt.Errorf("enroll-ui: credential %s: %w", dir, err)
	}
	roots, err := caclient.ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("enroll-ui: credential %s: %s: %w", dir, caclient.RootsFile, err)
	}
	return roots, nil
}
