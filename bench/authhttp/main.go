// Command authhttp is the auth_http responder for nginx's mail proxy in the benchmark
// (scripts/bench.sh): it accepts a login only when nginx verified the client
// certificate (Auth-SSL-Verify: SUCCESS), the certificate's subject CN is the login
// name, and the password is that user's; then it sends nginx to the backend. It is a
// benchmark fixture, not part of imapgate.
package main

import (
	"crypto/subtle"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9939", "address to listen on")
	backend := flag.String("backend", "127.0.0.1:9933", "IMAP server nginx logs in to (host:port)")
	users := flag.String("users", "alice@example.org:alice-secret", "comma-separated login:password pairs")
	flag.Parse()
	host, port, err := net.SplitHostPort(*backend)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authhttp: --backend:", err)
		os.Exit(2)
	}
	pw := map[string]string{}
	for _, u := range strings.Split(*users, ",") {
		if name, pass, ok := strings.Cut(u, ":"); ok {
			pw[name] = pass
		}
	}
	http.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		user, pass := unescape(r.Header.Get("Auth-User")), unescape(r.Header.Get("Auth-Pass"))
		want, known := pw[user]
		ok := r.Header.Get("Auth-SSL-Verify") == "SUCCESS" &&
			subjectCN(unescape(r.Header.Get("Auth-SSL-Subject"))) == user &&
			subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1 && known
		if !ok {
			w.Header().Set("Auth-Status", "Invalid login or password")
			w.Header().Set("Auth-Wait", "1")
			return
		}
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", host)
		w.Header().Set("Auth-Port", port)
	})
	fmt.Printf("authhttp listening on %s, backend %s\n", *listen, *backend)
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, "authhttp:", err)
		os.Exit(1)
	}
}

// subjectCN finds CN= in nginx's RFC 2253 subject ("CN=alice@example.org,O=…").
func subjectCN(s string) string {
	for _, part := range strings.Split(s, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "CN="); ok {
			return v
		}
	}
	return ""
}

// unescape undoes nginx's %XX escaping of header values (it leaves '+' alone).
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
