// Package chaos is imgrun's chaos and fuzz suite: it runs the imgrun binary as a subprocess
// against local registries that misbehave, kills it at random moments, fills its disk, races
// several copies of it against one cache and abuses the launcher, then checks that nothing was
// lost, corrupted, left behind or escaped. The tests carry the build tag chaos:
//
//	go test -tags chaos ./test/chaos/                          # short mode (CI), a few minutes
//	IMGRUN_CHAOS=long go test -tags chaos -timeout 3h ./test/chaos/ # long mode
//
// See README.md for what the suite guarantees and the latest counts.
package chaos
