// Package distreg runs Debian's distribution registry (docker-registry 2.8, the real
// thing Docker Hub and most private registries run) for integration tests: on 127.0.0.1
// with a free port, storage in t.TempDir(), optionally with htpasswd basic auth or as a
// pull-through cache (proxy mode) of another registry. The process is killed in
// t.Cleanup and its log is shown when the test failed.
package distreg
