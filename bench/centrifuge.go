package main

import (
	"context"
	"fmt"
	"time"

	"github.com/centrifugal/centrifuge"
	"github.com/prometheus/client_golang/prometheus"
)

// cfNode is one Centrifuge node's presence: a RedisPresenceManager over a
// RedisShard (its own Redis client).
type cfNode struct {
	shard  *centrifuge.RedisShard
	pm     *centrifuge.RedisPresenceManager
	broker *centrifuge.RedisBroker // join and leave messages; nil unless withEvents
}

// newCFNode connects a presence manager under prefix; userMapping keeps
// Centrifuge's per-user structures (EnableUserMapping), which
// PresenceStats reads instead of loading every presence entry.
func newCFNode(addr, prefix string, userMapping bool) (*cfNode, error) {
	// The Node is never run: the Redis presence manager only takes its
	// logger. Its metrics go to a registry of its own, as a process may
	// hold several nodes.
	node, err := centrifuge.New(centrifuge.Config{
		Name:    "bench",
		Metrics: centrifuge.MetricsConfig{RegistererGatherer: prometheus.NewRegistry()},
	})
	if err != nil {
		return nil, fmt.Errorf("centrifuge node: %w", err)
	}
	shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: addr})
	if err != nil {
		return nil, fmt.Errorf("centrifuge shard: %w", err)
	}
	conf := centrifuge.RedisPresenceManagerConfig{
		Prefix: prefix,
		Shards: []*centrifuge.RedisShard{shard},
		// Longer than any run, so that no entry expires while measured.
		PresenceTTL: time.Hour,
	}
	if userMapping {
		conf.EnableUserMapping = func(string) bool { return true }
	}
	pm, err := centrifuge.NewRedisPresenceManager(node, conf)
	if err != nil {
		shard.Close()
		return nil, fmt.Errorf("centrifuge presence: %w", err)
	}
	return &cfNode{shard: shard, pm: pm}, nil
}

// withEvents adds a RedisBroker on the node's shard, for the join and
// leave messages a Centrifuge node publishes (a PUBLISH each) when a
// channel's join/leave option is on. The broker is never run: publishing
// needs no subscription.
func (n *cfNode) withEvents(prefix string) error {
	node, err := centrifuge.New(centrifuge.Config{
		Name:    "bench",
		Metrics: centrifuge.MetricsConfig{RegistererGatherer: prometheus.NewRegistry()},
	})
	if err != nil {
		return fmt.Errorf("centrifuge node: %w", err)
	}
	b, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Prefix: prefix, Shards: []*centrifuge.RedisShard{n.shard}})
	if err != nil {
		return fmt.Errorf("centrifuge broker: %w", err)
	}
	n.broker = b
	return nil
}

func (n *cfNode) close() {
	if n.broker != nil {
		_ = n.broker.Close(context.Background())
	}
	n.shard.Close()
}

type cfNodes []*cfNode

func startCFNodes(e *env, n int, prefix string, userMapping bool) (cfNodes, error) {
	var nodes cfNodes
	for range n {
		node, err := newCFNode(e.cfg.addr, prefix, userMapping)
		if err != nil {
			nodes.close()
			return nil, err
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

func (ns cfNodes) close() {
	for _, n := range ns {
		n.close()
	}
}

// join and leave are a connection's presence in a channel, as a Centrifuge
// node records it on subscribe and unsubscribe.
func (n *cfNode) join(ch, client, user string) error {
	if err := n.pm.AddPresence(ch, client, &centrifuge.ClientInfo{ClientID: client, UserID: user}); err != nil {
		return fmt.Errorf("centrifuge AddPresence: %w", err)
	}
	return nil
}

func (n *cfNode) leave(ch, client, user string) error {
	if err := n.pm.RemovePresence(ch, client, user); err != nil {
		return fmt.Errorf("centrifuge RemovePresence: %w", err)
	}
	return nil
}

// joinInfo and leaveInfo are join and leave with the connection's info
// (ConnInfo: what headcount's presence metadata is) and, when the node has
// a broker (withEvents), the join or leave message, as a Centrifuge node
// sends them on subscribe and unsubscribe of a channel with presence and
// join/leave on.
func (n *cfNode) joinInfo(ch string, info *centrifuge.ClientInfo) error {
	if err := n.pm.AddPresence(ch, info.ClientID, info); err != nil {
		return fmt.Errorf("centrifuge AddPresence: %w", err)
	}
	if n.broker != nil {
		if err := n.broker.PublishJoin(ch, info); err != nil {
			return fmt.Errorf("centrifuge PublishJoin: %w", err)
		}
	}
	return nil
}

func (n *cfNode) leaveInfo(ch string, info *centrifuge.ClientInfo) error {
	if err := n.pm.RemovePresence(ch, info.ClientID, info.UserID); err != nil {
		return fmt.Errorf("centrifuge RemovePresence: %w", err)
	}
	if n.broker != nil {
		if err := n.broker.PublishLeave(ch, info); err != nil {
			return fmt.Errorf("centrifuge PublishLeave: %w", err)
		}
	}
	return nil
}
