package distreg

import (
	"regexp"
	"strings"
)

// accessLine matches the request of an access log line: "GET /v2/x/blobs/sha256:… HTTP/1.1".
var accessLine = regexp.MustCompile(`"([A-Z]+) (/v2/[^ "]*) HTTP/[0-9.]+"`)

// Requests returns "METHOD PATH" of every request in the registry's access log so far, in
// order. Tests use it to assert that a second pull sends no blob request.
func (r *Registry) Requests() []string {
	var out []string
	for _, line := range strings.Split(r.Log(), "\n") {
		if m := accessLine.FindStringSubmatch(line); m != nil {
			out = append(out, m[1]+" "+m[2])
		}
	}
	return out
}

// CountRequests counts the requests with method ("" = any) whose path contains sub.
func (r *Registry) CountRequests(method, sub string) int {
	n := 0
	for _, req := range r.Requests() {
		m, p, _ := strings.Cut(req, " ")
		if (method == "" || m == method) && strings.Contains(p, sub) {
			n++
		}
	}
	return n
}
