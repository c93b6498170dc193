package icounter

import "time"

// Observer receives what a counter does, for metrics. Its methods are called
// on hot paths and from background goroutines: they must be fast and safe
// for concurrent use.
type Observer interface {
	// ScriptDone reports one Redis call, or one pipeline of them: "assert",
	// "read" (plain reads), "reset", "heartbeat" (registrations and
	// heartbeats) and "sweep" (a whole sweep of a dead session, its drops
	// included).
	ScriptDone(script string, d time.Duration, err error)
	// Reaped reports non-zero slices of other instances (dead, or a
	// predecessor of this one under the same InstanceID) removed by this
	// instance: by a sweep, or by a script dropping expired leases.
	Reaped(n int)
	// Flushed reports one background batch: a lax flush or a heartbeat.
	Flushed(heartbeat bool, keys int, d time.Duration, err error)
}

func (e *engine) observeScript(name string, start time.Time, err error) {
	if o := e.cfg.observer; o != nil {
		o.ScriptDone(name, time.Since(start), err)
	}
}

func (e *engine) observeReaped(n int64) {
	if o := e.cfg.observer; o != nil && n > 0 {
		o.Reaped(int(n))
	}
}

func (e *engine) observeFlush(heartbeat bool, keys int, start time.Time, err error) {
	if o := e.cfg.observer; o != nil {
		o.Flushed(heartbeat, keys, time.Since(start), err)
	}
}
