//go:build race

package frontend

// raceEnabled is set when the tests run with the race detector.
const raceEnabled = true
