package main

import (
	"embed"
	"net/http"
)

// static holds the page: plain HTML, CSS and JavaScript, no build step.
//
//go:embed static
var static embed.FS

// servePage serves the page at / and its files under /static/. The page
// uses relative URLs only, so it works as well behind the supervisor's
// /node/{i}/ proxy.
func servePage(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, "static/index.html")
	})
	mux.Handle("GET /static/", http.FileServerFS(static))
}
