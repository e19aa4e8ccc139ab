package rootfs

// SetParallelFlatten switches Flatten's concurrent path for a test; it returns the restore.
func SetParallelFlatten(on bool) (restore func()) {
	old := parallelFlatten
	parallelFlatten = on
	return func() { parallelFlatten = old }
}
