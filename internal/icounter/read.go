package icounter

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/internal/lua"
)

// read is one counter's read in a batch of the reader; callers reading the
// same counter at the same time share it.
type read struct {
	done  chan struct{}
	total int64
	mine  int64 // this instance's slice as Redis holds it
	epoch int64 // -1: no such counter
	seq   int64 // a group's last event sequence (presence reads)
	err   error
	// present: a group's presence hash (see presence.lua), whose read is
	// its member count n, in total, and its last event sequence q, in seq.
	present bool
}

func newRead() *read { return &read{done: make(chan struct{})} }

func newPresentRead() *read { return &read{done: make(chan struct{}), present: true} }

// readFields are the fields of a counter hash a read needs.
func (e *engine) readFields() []string { return []string{"t", "e", "v:" + e.cfg.id} }

// readRedis reads counter hash h with the reader: a plain HMGET, batched
// with the reads of other callers into one pipeline (one round trip per
// Redis node). A read that has not been sent yet is shared; one in flight
// is not, as it may predate changes the caller saw acknowledged.
func (e *engine) readRedis(ctx context.Context, h string) (*read, error) {
	rd := e.reads.addBy(ctx, h, newRead)
	select {
	case <-rd.done:
		return rd, rd.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *engine) readBatch(ctx context.Context, batch map[string]*read) {
	// The field names are made interface values once per batch, not once
	// per counter: a batch may read thousands (GetMany).
	f := e.readFields()
	t, ep, v := any(f[0]), any(f[1]), any(f[2])
	n, q := any("n"), any("q")
	reads := make([]*read, 0, len(batch))
	cmds := make([]*redis.SliceCmd, 0, len(batch))
	pipe := e.client.Pipeline()
	for h, rd := range batch {
		var cmd *redis.SliceCmd
		if rd.present {
			cmd = redis.NewSliceCmd(ctx, "hmget", h, n, q)
		} else {
			cmd = redis.NewSliceCmd(ctx, "hmget", h, t, ep, v)
		}
		_ = pipe.Process(ctx, cmd) // queued: the error comes with Exec
		reads, cmds = append(reads, rd), append(cmds, cmd)
	}
	start := time.Now()
	_, err := pipe.Exec(ctx)
	e.observeScript("read", start, err)
	for i, rd := range reads {
		if rd.present {
			rd.total, rd.seq, rd.err = parsePresent(cmds[i])
		} else {
			rd.total, rd.epoch, rd.mine, rd.err = parseRead(cmds[i])
		}
		close(rd.done)
	}
}

// parsePresent reads the reply of HMGET G:pp n q.
func parsePresent(cmd *redis.SliceCmd) (n, q int64, err error) {
	vals, err := cmd.Result()
	if err != nil {
		return 0, 0, err
	}
	if len(vals) != 2 {
		return 0, 0, fmt.Errorf("headcount: read replied %d values", len(vals))
	}
	var out [2]int64
	for i, v := range vals {
		if v == nil {
			continue
		}
		s, _ := v.(string)
		if out[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("headcount: read: %w", err)
		}
	}
	return max(out[0], 0), out[1], nil
}

// parseRead reads the reply of HMGET h t e v:<id>.
func parseRead(cmd *redis.SliceCmd) (total, epoch, mine int64, err error) {
	vals, err := cmd.Result()
	if err != nil {
		return 0, 0, 0, err
	}
	if len(vals) != 3 {
		return 0, 0, 0, fmt.Errorf("headcount: read replied %d values", len(vals))
	}
	if vals[1] == nil {
		return 0, -1, 0, nil // no such counter
	}
	var out [3]int64
	for i, v := range vals {
		s, _ := v.(string)
		if v == nil {
			continue
		}
		if out[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, 0, fmt.Errorf("headcount: read: %w", err)
		}
	}
	return out[0], out[1], out[2], nil
}

// memberPageKey is a page of a group's member list, read with members.lua
// from cursor, holding the whole list of version tag (empty: none).
type memberPageKey struct {
	group, cursor, tag string
	limit              int
}

// memberRead is one page's read in a batch of the member reader.
type memberRead struct {
	done chan struct{}
	vals []string // members.lua's reply
	err  error
}

func newMemberRead() *memberRead { return &memberRead{done: make(chan struct{})} }

// readMembers reads a page of members with the member reader, as
// readRedis reads counters: callers asking for the same page (holding the
// same list) before it is sent share one script run, and concurrent pages
// go in one pipeline. A page asked for by a thousand watchers of one room
// at once costs Redis one read.
func (e *engine) readMembers(ctx context.Context, k memberPageKey) ([]string, error) {
	if err := e.enter(ctx); err != nil {
		return nil, err
	}
	defer e.ops.Leave()
	rd := e.memberReads.addBy(ctx, k, newMemberRead)
	select {
	case <-rd.done:
		return rd.vals, rd.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *engine) memberReadBatch(ctx context.Context, batch map[memberPageKey]*memberRead) {
	calls := make([]*lua.Call, 0, len(batch))
	reads := make([]*memberRead, 0, len(batch))
	for k, rd := range batch {
		calls = append(calls, &lua.Call{Script: lua.Members, Keys: common{e}.listKeys(k.group),
			Args: []any{k.cursor, k.limit, k.tag}})
		reads = append(reads, rd)
	}
	_ = lua.RunBatch(ctx, e.client, calls) // each call's outcome is its own
	for i, rd := range reads {
		rd.vals, rd.err = calls[i].Cmd.StringSlice()
		close(rd.done)
	}
}
