package keyspace

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Scan returns the counter keys of every main key of the space in Redis:
// on every master of a Cluster client (concurrently), or on the one server
// of any other client. Companion keys are left out.
func (s Space) Scan(ctx context.Context, c redis.UniversalClient) ([]string, error) {
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, m redis.UniversalClient) error {
		it := m.Scan(ctx, 0, s.Pattern(), 1000).Iterator()
		var found []string
		for it.Next(ctx) {
			if k, ok := s.Parse(it.Val()); ok {
				found = append(found, k)
			}
		}
		if err := it.Err(); err != nil {
			return err
		}
		mu.Lock()
		keys = append(keys, found...)
		mu.Unlock()
		return nil
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
		return keys, err
	}
	return keys, scan(ctx, c)
}
