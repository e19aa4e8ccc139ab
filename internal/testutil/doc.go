// Package testutil holds small helpers shared by imgrun's tests: skipping tests that need
// root or a binary (and failing instead of skipping on CI, where everything must run),
// compiling tiny static Go programs for test images, and picking free loopback ports.
package testutil
