package testreg

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

const tokenPath = "/token"

// TokenConfig makes the registry answer like Docker Hub: requests without a valid bearer
// token get 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, and the realm
// (served at /token on the same host, which go-containerregistry requires for loopback
// realms) hands out tokens.
type TokenConfig struct {
	// User and Password, when set, are required (basic auth) at the token endpoint;
	// anonymous token requests then get 401.
	User, Password string
	// Service is the service= parameter (default "testreg").
	Service string
	// Garbage makes the token endpoint answer 200 with a body that is not a token.
	Garbage bool
	// Basic replaces the token flow with plain basic auth on every request
	// (401 with `WWW-Authenticate: Basic realm="testreg"`), as small private registries do.
	Basic bool
}

func tokenHandler(tc TokenConfig, next http.Handler) http.Handler {
	if tc.Service == "" {
		tc.Service = "testreg"
	}
	state := &tokenState{cfg: tc, tokens: map[string]bool{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tc.Basic {
			if u, p, ok := r.BasicAuth(); ok && u == tc.User && p == tc.Password {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="testreg"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if r.URL.Path == tokenPath {
			state.serveToken(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		if tok, ok := strings.CutPrefix(auth, "Bearer "); ok && state.valid(tok) {
			next.ServeHTTP(w, r)
			return
		}
		scope := ""
		if repo := repoOf(r.URL.Path); repo != "" {
			scope = fmt.Sprintf(",scope=\"repository:%s:pull\"", repo)
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer realm=\"http://%s%s\",service=%q%s", r.Host, tokenPath, tc.Service, scope))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	})
}

type tokenState struct {
	cfg    TokenConfig
	mu     sync.Mutex
	tokens map[string]bool
}

func (s *tokenState) valid(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[tok]
}

func (s *tokenState) serveToken(w http.ResponseWriter, r *http.Request) {
	if s.cfg.User != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != s.cfg.User || p != s.cfg.Password {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}`)
			return
		}
	}
	if s.cfg.Garbage {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "<html>definitely not a token</html>")
		return
	}
	b := make([]byte, 16)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	s.mu.Lock()
	s.tokens[tok] = true
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

// repoOf extracts <repo> from /v2/<repo>/manifests/… or /v2/<repo>/blobs/….
func repoOf(path string) string {
	p, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	for _, sep := range []string{"/manifests/", "/blobs/"} {
		if i := strings.Index(p, sep); i >= 0 {
			return p[:i]
		}
	}
	return ""
}
