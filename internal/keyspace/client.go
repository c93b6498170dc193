package keyspace

import (
	"errors"
	"reflect"

	"github.com/redis/go-redis/v9"
)

// CheckClient refuses the clients no counter can work with: none at all
// (nil, or a nil *redis.Client in the interface, which would panic on its
// first command), and a *redis.Ring, whose shards are servers of their own:
// Scan, a script's loading and the registry's keys would reach one of
// them, not all.
func CheckClient(c redis.UniversalClient) error {
	if c == nil {
		return errors.New("nil Redis client")
	}
	if v := reflect.ValueOf(c); v.Kind() == reflect.Pointer && v.IsNil() {
		return errors.New("nil Redis client")
	}
	if _, ok := c.(*redis.Ring); ok {
		return errors.New("a *redis.Ring is not supported: use a single server, Sentinel or a Cluster")
	}
	return nil
}
