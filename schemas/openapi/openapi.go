// Package openapi holds the OpenAPI 3.1 document of tandem's whole REST
// surface (ingest and query API) and serves it at GET /v1/openapi.json on
// both listeners. The document is written by hand; TestOpenAPI* in
// cmd/tandem fail when it and the handlers disagree, and
// scripts/openapi-fuzz.sh fuzzes the live API from it.
package openapi

import (
	_ "embed"
	"net/http"
)

//go:embed openapi.json
var document []byte

// Path is where both the query API and the ingest gateway serve the document
// (their route lines spell it out, so the route test can read them).
const Path = "/v1/openapi.json"

// Document returns a copy of the document's bytes.
func Document() []byte { return append([]byte(nil), document...) }

// Handler serves the document. It is public on purpose (no token): it
// describes the API, it holds no data.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write(document)
	})
}
