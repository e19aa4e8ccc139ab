package testreg

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Action is what a Fault does with a matching request. next is the registry behind it.
type Action func(w http.ResponseWriter, r *http.Request, next http.Handler)

// Fault applies Action to requests that match Method, Kind and PathContains (empty
// fields match anything), for the first Times matching requests (0 = every one).
// Later requests pass through untouched: "500 then OK" is Times: 1, Action: Status(500).
type Fault struct {
	Method       string // "GET", "HEAD", …
	Kind         string // KindManifest, KindBlob, …
	PathContains string // e.g. a digest's hex, or a repository name
	Times        int
	Action       Action
}

func faultHandler(faults []Fault, next http.Handler) http.Handler {
	var mu sync.Mutex
	hits := make([]int, len(faults))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := KindOf(r.URL.Path)
		mu.Lock()
		chosen := -1
		for i, f := range faults {
			if f.Method != "" && f.Method != r.Method || f.Kind != "" && f.Kind != kind ||
				f.PathContains != "" && !strings.Contains(r.URL.Path, f.PathContains) {
				continue
			}
			if f.Times > 0 && hits[i] >= f.Times {
				continue
			}
			hits[i]++
			chosen = i
			break
		}
		mu.Unlock()
		if chosen < 0 {
			next.ServeHTTP(w, r)
			return
		}
		faults[chosen].Action(w, r, next)
	})
}

// Status answers with code and the given header pairs ("Retry-After", "1", …).
func Status(code int, headerPairs ...string) Action {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		for i := 0; i+1 < len(headerPairs); i += 2 {
			w.Header().Set(headerPairs[i], headerPairs[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"errors":[{"code":"TESTREG_FAULT","message":"injected status %d"}]}`, code)
	}
}

// RateLimit answers 429 the way Docker Hub does: Retry-After (if not empty) and the
// RateLimit-Limit / RateLimit-Remaining headers.
func RateLimit(retryAfter string, limit, remaining int) Action {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("RateLimit-Limit", fmt.Sprintf("%d;w=21600", limit))
		w.Header().Set("RateLimit-Remaining", fmt.Sprintf("%d;w=21600", remaining))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your unauthenticated pull rate limit."}]}`)
	}
}

// capture runs next into a recorder so an Action can rewrite the response.
func capture(r *http.Request, next http.Handler) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	return rec
}

func copyHeader(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
}

// FlipByte serves the real response with the byte at offset inverted (same length).
func FlipByte(offset int) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		body := rec.Body.Bytes()
		if offset < len(body) {
			body[offset] ^= 0xff
		}
		copyHeader(w, rec)
		w.WriteHeader(rec.Code)
		w.Write(body)
	}
}

// Replace serves body instead of the real response (keeping its headers, with a
// matching Content-Length), e.g. a manifest that differs from a pinned digest.
func Replace(body []byte) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		copyHeader(w, rec)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	}
}

// SetHeader serves the real response with header k set to v (e.g. a lying
// Docker-Content-Digest or Content-Type).
func SetHeader(k, v string) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		copyHeader(w, rec)
		w.Header().Set(k, v)
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}
}

// Truncate sends the real headers (full Content-Length) but only the first n body bytes,
// then drops the connection.
func Truncate(n int) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		copyHeader(w, rec)
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:min(n, len(body))])
		flush(w)
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
}

// LyingLength declares Content-Length: n whatever the body is. When n is larger than
// the body, the connection is dropped after the real bytes; when smaller, only n bytes
// are sent, so the client sees a clean but short response.
func LyingLength(n int) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		copyHeader(w, rec)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		if r.Method == http.MethodHead {
			return
		}
		w.Write(body[:min(n, len(body))])
		if n > len(body) {
			flush(w)
			panic(http.ErrAbortHandler)
		}
	}
}

// Stall never answers: it waits until the client gives up (or the server closes).
func Stall() Action {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		<-r.Context().Done()
	}
}

// StallAfter sends the real headers and the first n body bytes, then stops sending
// until the client gives up.
func StallAfter(n int) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		copyHeader(w, rec)
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:min(n, len(body))])
		flush(w)
		<-r.Context().Done()
	}
}

// Trickle sends the real response chunk bytes at a time, pausing every between chunks.
func Trickle(chunk int, every time.Duration) Action {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := capture(r, next)
		copyHeader(w, rec)
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		for len(body) > 0 {
			k := min(chunk, len(body))
			if _, err := w.Write(body[:k]); err != nil {
				return
			}
			flush(w)
			body = body[k:]
			select {
			case <-r.Context().Done():
				return
			case <-time.After(every):
			}
		}
	}
}

// Redirect answers 307 to the same path and query on baseURL (e.g. a Recorder's URL).
func Redirect(baseURL string) Action {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		target := strings.TrimSuffix(baseURL, "/") + r.URL.RequestURI()
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}
}

// RedirectLoop answers 307 back to the very same URL, forever.
func RedirectLoop() Action {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		http.Redirect(w, r, r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
