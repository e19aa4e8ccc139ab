package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// RateLimitError is returned when a registry still answers 429 after all retries.
// errors.Is(err, ErrRateLimited) is true. Limit and Remaining are the RateLimit-Limit and
// RateLimit-Remaining headers as the registry sent them ("100;w=21600"), if it did.
type RateLimitError struct {
	Registry   string
	DockerHub  bool
	Limit      string
	Remaining  string
	RetryAfter string
	Attempts   int
}

func (e *RateLimitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: too many requests (HTTP 429) after %d attempts", e.Registry, e.Attempts)
	if e.Remaining != "" || e.Limit != "" {
		fmt.Fprintf(&b, " (RateLimit-Remaining: %s, RateLimit-Limit: %s)", orUnknown(e.Remaining), orUnknown(e.Limit))
	}
	if e.RetryAfter != "" {
		fmt.Fprintf(&b, " (Retry-After: %s)", e.RetryAfter)
	}
	if e.DockerHub {
		b.WriteString("; Docker Hub limits image pulls per 6 hours (100 for anonymous users per IP, 200 for free accounts, more for paid ones; manifest HEADs do not count)")
	}
	b.WriteString("; log in with `docker login` (imgrun reads ~/.docker/config.json) or pull through a mirror with --mirror URL")
	return b.String()
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// statusError is a non-success HTTP answer, kept to decide on retries and fallbacks.
type statusError struct {
	Code     int
	What     string // "manifest index.docker.io/library/node:latest"
	Detail   string // registry error codes and messages
	sentinel error
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("%s: %s", e.What, http.StatusText(e.Code))
	if e.Code != 0 {
		s = fmt.Sprintf("%s: HTTP %d %s", e.What, e.Code, http.StatusText(e.Code))
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	switch e.sentinel {
	case ErrUnauthorized:
		s += "; check your credentials (`docker login HOST`, ~/.docker/config.json) and that the repository exists"
	}
	return s
}

func (e *statusError) Unwrap() error { return e.sentinel }

// registryErrors is the distribution spec's error body.
type registryErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// responseError turns a failed response into an error wrapping the right sentinel. It
// reads (a bounded part of) and closes the body.
func responseError(resp *http.Response, what string) error {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var re registryErrors
	_ = json.Unmarshal(body, &re)
	var details []string
	notFound := resp.StatusCode == http.StatusNotFound
	for _, e := range re.Errors {
		switch e.Code {
		case "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN":
			notFound = true
		}
		details = append(details, strings.TrimSpace(e.Code+": "+e.Message))
	}
	se := &statusError{Code: resp.StatusCode, What: what, Detail: sanitize(strings.Join(details, "; "))}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		se.sentinel = ErrUnauthorized
	case notFound:
		se.sentinel = ErrNotFound
	}
	return se
}

// sanitize keeps registry-provided text on one short line.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func rateLimitFrom(resp *http.Response, registry string, dockerHub bool, attempts int) *RateLimitError {
	return &RateLimitError{
		Registry:   registry,
		DockerHub:  dockerHub,
		Limit:      sanitize(resp.Header.Get("RateLimit-Limit")),
		Remaining:  sanitize(resp.Header.Get("RateLimit-Remaining")),
		RetryAfter: sanitize(resp.Header.Get("Retry-After")),
		Attempts:   attempts,
	}
}
