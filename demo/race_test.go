//go:build race

package main

// raceEnabled: the tests run with -race, and build the demo with it.
const raceEnabled = true
