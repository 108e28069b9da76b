// Package dashboard is tandem's web dashboard: one page of plain HTML, CSS
// and JavaScript (no framework, no CDN), embedded in the binary and served
// by `tandem serve` at "/". The page polls GET /v1/status for the health
// verdicts and live charts (throughput, lag, freshness, query latency) and
// offers a query explorer over GET /v1/views and /v1/views/{view}/query.
// When the API answers 401 it asks for a token and sends it as a bearer
// header; the token stays in the browser's session storage.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// Files are the dashboard's assets (index.html, app.js, style.css).
func Files() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embed pattern above guarantees the folder
	}
	return sub
}

// Handler serves the page at "/" and its assets at "/assets/<name>";
// every other path is 404, so mounting it at "GET /" hides no API error.
func Handler() http.Handler {
	files := Files()
	static := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/" || p == "/index.html":
			serveFile(w, r, files, "index.html")
		case strings.HasPrefix(p, "/assets/") && path.Clean(p) == p:
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			r2 := r.Clone(r.Context())
			r2.URL.Path = strings.TrimPrefix(p, "/assets")
			static.ServeHTTP(w, r2)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"not found"}` + "\n"))
		}
	})
}

func serveFile(w http.ResponseWriter, r *http.Request, files fs.FS, name string) {
	b, err := fs.ReadFile(files, name)
	if err != nil {
		http.Error(w, "dashboard asset missing", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Everything is same-origin: no CDN, no inline script.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	if r.Method == http.MethodHead {
		return
	}
	w.Write(b)
}
