package ops

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
)

// Bearer checks "Authorization: Bearer <token>" against a set of tokens. It
// is the one bearer-token check of every HTTP surface (ingest, the query
// API, /v1/status, /metrics), so they all parse the header the same way:
// the scheme is case-insensitive (RFC 7235 §2.1), spaces around the token
// are ignored, and tokens are compared in constant time through their
// SHA-256 digests, so neither a token's bytes nor its length leak through
// timing. A Bearer with no tokens lets every request through.
type Bearer struct {
	digests [][sha256.Size]byte
}

// NewBearer returns a check for tokens; empty tokens are ignored (the
// configuration refuses them).
func NewBearer(tokens []string) *Bearer {
	b := &Bearer{}
	for _, t := range tokens {
		if t != "" {
			b.digests = append(b.digests, sha256.Sum256([]byte(t)))
		}
	}
	return b
}

// Open reports whether no token is configured (every request passes).
func (b *Bearer) Open() bool { return b == nil || len(b.digests) == 0 }

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header value, the scheme matched in any case; ok is false when the header
// is not of that form or the token is empty.
func BearerToken(header string) (token string, ok bool) {
	const scheme = "bearer"
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	rest := header[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	token = strings.TrimSpace(rest)
	return token, token != ""
}

// Check reports whether r carries one of the tokens. client names the
// caller for per-client limits without holding the token itself: "token:"
// and a prefix of the token's digest when the request carried a valid one,
// otherwise "addr:" and the remote host.
func (b *Bearer) Check(r *http.Request) (ok bool, client string) {
	token, present := BearerToken(r.Header.Get("Authorization"))
	if b.Open() {
		if present {
			sum := sha256.Sum256([]byte(token))
			return true, "token:" + hex.EncodeToString(sum[:8])
		}
		return true, "addr:" + RemoteHost(r)
	}
	if !present {
		return false, "addr:" + RemoteHost(r)
	}
	sum := sha256.Sum256([]byte(token))
	match := 0
	for i := range b.digests {
		match |= subtle.ConstantTimeCompare(sum[:], b.digests[i][:])
	}
	if match != 1 {
		return false, "addr:" + RemoteHost(r)
	}
	return true, "token:" + hex.EncodeToString(sum[:8])
}

// RemoteHost is the host part of r.RemoteAddr (the address without the
// port), so that one client's many connections count as one.
func RemoteHost(r *http.Request) string {
	addr := r.RemoteAddr
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		addr = addr[:i]
	}
	return strings.Trim(addr, "[]")
}

// Refusal answers a request that Wrap refused; it must write the response
// (status 401 and a body). WWW-Authenticate is already set.
type Refusal func(w http.ResponseWriter, r *http.Request)

// Wrap returns h behind the check: a request without one of the tokens gets
// 401 with WWW-Authenticate: Bearer realm=<realm>, answered by refuse (nil:
// a JSON {"error": …} body). With no tokens configured, Wrap returns h.
func (b *Bearer) Wrap(realm string, h http.Handler, refuse Refusal) http.Handler {
	if b.Open() {
		return h
	}
	if refuse == nil {
		refuse = func(w http.ResponseWriter, _ *http.Request) {
			WriteJSONError(w, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer <token>)")
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, _ := b.Check(r); !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			refuse(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// WriteJSONError writes {"error": msg} with code.
func WriteJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(append(b, '\n'))
}
