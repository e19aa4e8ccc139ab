//go:build race

package layers

// raceEnabled: the race detector multiplies memory and time, so the memory budget test
// does not apply.
const raceEnabled = true
