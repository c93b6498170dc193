package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// serverStats is what the Redis server reports having done so far.
type serverStats struct {
	commands int64   // every command executed, INFO excepted: an EVALSHA and each command its script calls
	cpu      float64 // seconds of CPU, user + system
}

// readServerStats reads INFO commandstats and cpu. The INFO commands are
// left out of the count: they are the harness's own, reading the stats.
func readServerStats(ctx context.Context, c *redis.Client) (serverStats, error) {
	// "all" rather than two sections: INFO takes several only since 7.0.
	info, err := c.Info(ctx, "all").Result()
	if err != nil {
		return serverStats{}, fmt.Errorf("INFO: %w", err)
	}
	var s serverStats
	for k, v := range infoFields(info) {
		switch {
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return serverStats{}, fmt.Errorf("INFO %s=%q: %w", k, v, err)
			}
			s.cpu += f
		case strings.HasPrefix(k, "cmdstat_") && k != "cmdstat_info":
			// calls=N,usec=...,...
			calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			n, err := strconv.ParseInt(calls, 10, 64)
			if err != nil {
				return serverStats{}, fmt.Errorf("INFO %s=%q: %w", k, v, err)
			}
			s.commands += n
		}
	}
	return s, nil
}
