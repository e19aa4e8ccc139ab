// Package layers is imgrun's content-addressed image store: it downloads, verifies and
// keeps image blobs in a standard OCI image layout, and hands out verified, uncompressed
// layer streams.
//
// # How do I use this package?
//
//	st, err := layers.Open(root)
//	src, err := client.Open(ref)                   // a registry.Source
//	img, err := st.Pull(ctx, src, layers.PullOptions{})
//	for _, l := range img.Layers() {
//		rc, err := l.Uncompressed(ctx)             // tar stream, verified at EOF
//		…
//	}
//
// Later, without network: rec, err := st.Lookup(ctx, ref, platform); img, err := st.Load(ctx, rec).
//
// # On disk
//
// ROOT/oci is an OCI image layout (oci-layout, index.json, blobs/sha256/<hex>) that skopeo,
// umoci and crane read as it is; index.json has one entry per pulled (reference, platform),
// annotated with org.opencontainers.image.ref.name, io.imgrun.platform and
// io.imgrun.index.digest. ROOT/ingest holds partial downloads, ROOT/locks flock files,
// ROOT/tmp temporary trees.
//
// # Crash and concurrency rules
//
//   - A blob is in blobs/ only after its size and sha256 were checked while it streamed into
//     ingest/<hex>.partial, the file was fsynced and renamed, and the directory fsynced.
//     Nothing in ingest/ or tmp/ is trusted: a partial file is only a resume hint, its bytes
//     are re-hashed from offset 0 and the rest is fetched with a Range request.
//   - Downloads of one blob are serialized by an exclusive flock on locks/blob-<hex>.lock;
//     whoever gets the lock second finds the blob committed and fetches nothing. flock locks
//     die with their process, so kill -9 never leaves a stale lock.
//   - index.json is rewritten (read-modify-write) under locks/index.lock, as index.json.tmp,
//     fsync, rename: readers always see a whole file.
//   - Pull, Ensure, Verify and Hold take locks/gc.lock shared; GC takes it exclusive.
//   - A full disk fails with a *DiskFullError naming the file; the partial file is removed.
//
// # The byte path
//
// Download: network → sha256 + size count → ingest file, one pass, 256 KiB at a time; every
// layer byte is hashed once on the way in. Pull downloads Jobs layers at once and calls
// PullOptions.LayerReady as each one lands, so an unpacker can start on the first layers
// while the others still download.
//
// Unpack: Uncompressed reads the committed blob (page cache) and decompresses it (klauspost
// gzip or zstd, by magic bytes) in a goroutine that also hashes the uncompressed bytes for
// the diffID. The compressed bytes are not hashed again: a blob damaged since its commit
// changes the uncompressed bytes or fails the codec's checksum, so the diffID check
// catches it (and Verify re-hashes blobs on demand). The consumer gets the bytes through a
// queue of four 512 KiB chunks, so a tar extractor on one core overlaps with decompression
// on the other, and memory per open layer is bounded (2 MiB plus the decoder's window).
package layers
