package distreg

import (
	"regexp"
	"strconv"
	"strings"
)

// Request is one line of the registry's access log.
type Request struct {
	Method string
	Path   string // "/v2/library/node/blobs/sha256:…"
	Status int    // 200, 206 (a Range request served), 404, …
	Bytes  int64  // body bytes sent
}

func (r Request) String() string { return r.Method + " " + r.Path + " " + strconv.Itoa(r.Status) }

// accessLine matches a combined-log-format line: "GET /v2/x HTTP/1.1" 200 1234.
var accessLine = regexp.MustCompile(`"([A-Z]+) (/v2/[^ "]*) HTTP/[0-9.]+" ([0-9]{3}) ([0-9]+)`)

// Requests returns every request of the registry's access log so far, in order. Tests use
// it to assert, say, that a second pull sends no blob request, or that a resumed
// download was served as a range (206).
func (r *Registry) Requests() []Request {
	var out []Request
	for _, line := range strings.Split(r.Log(), "\n") {
		if m := accessLine.FindStringSubmatch(line); m != nil {
			status, _ := strconv.Atoi(m[3])
			n, _ := strconv.ParseInt(m[4], 10, 64)
			out = append(out, Request{Method: m[1], Path: m[2], Status: status, Bytes: n})
		}
	}
	return out
}

// CountRequests counts the requests with method ("" = any) whose path contains sub.
func (r *Registry) CountRequests(method, sub string) int {
	n := 0
	for _, req := range r.Requests() {
		if (method == "" || req.Method == method) && strings.Contains(req.Path, sub) {
			n++
		}
	}
	return n
}
