package counter

// Kill abandons a per-instance counter's slices in Redis exactly as a crash
// would: its heartbeat stops and nothing is removed, so other instances reap
// the slices after DeadInstanceThreshold. For the crash tests only.
func Kill(c any) {
	switch c := c.(type) {
	case *PerInstance:
		c.c.Kill()
	case *PerInstanceLax:
		c.c.Kill()
	default:
		panic("counter.Kill: not a per-instance counter")
	}
}
