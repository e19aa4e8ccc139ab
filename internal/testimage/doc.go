// Package testimage builds deterministic container images for imgrun's tests: a busybox
// image from Debian's busybox-static, a Debian bookworm image made once with debootstrap
// and cached, and small hand-made layers (whiteouts, opaque directories, hardlinks across
// layers). Images are go-containerregistry v1.Images, ready to push with remote.Write.
//
// Nothing is downloaded at test time except by apt and debootstrap from the Debian mirror.
package testimage
