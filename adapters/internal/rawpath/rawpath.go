// Package rawpath is what the adapters of routers that match the raw path
// share.
package rawpath

import (
	"net/http"
	"net/url"
)

// Param returns v, a path parameter of r, unescaped when the router matched
// r's raw path (it has one): "/ws/a%2Fb" gives "a%2Fb" there. A room so
// has one name whatever the path's encoding, as with net/http's ServeMux.
// A parameter that does not unescape is returned as it is.
func Param(r *http.Request, v string) string {
	if r.URL.RawPath != "" {
		if u, err := url.PathUnescape(v); err == nil {
			return u
		}
	}
	return v
}
