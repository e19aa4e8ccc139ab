// Package registry parses image references and resolves them to a verified platform
// manifest and config, from a distribution registry (Docker Hub, with optional pull-through
// mirrors), an OCI image layout directory (oci:DIR[:TAG]) or a `docker save` archive
// (docker-archive:FILE).
//
// How do I use this package?
//
//	ref, err := registry.ParseReference("node:22")       // index.docker.io/library/node:22
//	c, err := registry.New(registry.WithMirrors("https://mirror.example"))
//	src, err := c.Open(ref)
//	img, err := src.Resolve(ctx, registry.HostPlatform(), nil)
//	rc, start, err := src.Fetch(ctx, img.Manifest.Layers[0], 0) // raw, unverified bytes
//
// Manifests, indexes and configs are verified here (digest, size ≤ 4 MiB, media type);
// blob bytes from Fetch are verified by the caller (pkg/layers) while they stream, so every
// byte is hashed exactly once.
//
// Registry traffic goes through go-containerregistry's transport (token flow, credential
// helpers); loopback registries use plain HTTP. Credentials never follow a redirect to
// another host. Transient failures (5xx, 408, 429, i/o timeouts, broken connections) are
// retried with jittered exponential backoff; 429 honours Retry-After.
package registry
