// Package integration holds imgrun's end-to-end tests (build tag integration): they push
// realistic images (busybox, a three-layer Debian bookworm) to Debian's real distribution
// registry, started on 127.0.0.1 by internal/distreg, and pull, unpack and export them
// through pkg/registry, pkg/layers and pkg/rootfs. Run them with scripts/test.sh, or
//
//	go test -tags integration ./test/integration
package integration
