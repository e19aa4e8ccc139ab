package registry

import (
	"net"
	"strings"
)

// isLoopbackHost reports whether host[:port] is localhost, 127.0.0.0/8 or ::1. Such
// registries are reached over plain HTTP without a flag, as docker does.
func isLoopbackHost(hostport string) bool {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
