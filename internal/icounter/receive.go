package icounter

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// pubsubPing is how long a subscription's connection stays silent before
// it is pinged, as go-redis' own channels do: a ping that cannot be sent
// has go-redis dial the connection again.
const pubsubPing = 3 * time.Second

// receive reads ps until it is closed, handing each message (a
// *redis.Message, or a *redis.Subscription: a confirmation, also of the
// subscriptions go-redis makes again after dialling a broken connection) to
// handle, and each failed read to lost. It reads with ReceiveTimeout, not a
// go-redis channel, because those drop errors, and a reconnect shows only
// as one. Failing again (Redis away, or refusing), it waits 100 ms, or
// until quit is closed, before the next read.
func receive(ps *redis.PubSub, quit <-chan struct{}, lost func(error), handle func(any)) {
	ctx := context.Background()
	failing := false
	for {
		m, err := ps.ReceiveTimeout(ctx, pubsubPing)
		var nerr net.Error
		switch {
		case errors.Is(err, redis.ErrClosed):
			return
		case errors.As(err, &nerr) && nerr.Timeout():
			_ = ps.Ping(ctx)
			continue
		case err != nil:
			lost(err)
			if failing {
				t := time.NewTimer(100 * time.Millisecond)
				select {
				case <-t.C:
				case <-quit:
					t.Stop()
				}
			}
			failing = true
			continue
		}
		failing = false
		handle(m)
	}
}
