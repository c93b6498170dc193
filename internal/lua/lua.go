// Package lua holds the Lua scripts of the counters (the *.lua files beside
// this one, embedded) and runs them: SCRIPT LOAD once at start, EVALSHA
// afterwards, and on NOSCRIPT (a Redis restart, failover or SCRIPT FLUSH)
// load again and retry once, in pipelines too, where go-redis does not fall
// back by itself.
package lua

import (
	"context"
	"crypto/sha1"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

//go:embed *.lua
var files embed.FS

// The scripts. Each is lib.lua followed by its own files.
var (
	// Instance-aware counters (internal/icounter).
	Assert     = mustLoad("presence", "drops", "slice", "assert")
	AssertMany = mustLoad("presence", "drops", "slice", "assert_many")
	Reset      = mustLoad("presence", "drops", "reset")
	Drop       = mustLoad("presence", "drops", "drop")
	// Presence reads (internal/icounter).
	Members = mustLoad("members")
	Canary  = mustLoad("canary")
	// The registry of instances (internal/icounter).
	Register  = mustLoad("registry", "register")
	Heartbeat = mustLoad("registry", "heartbeat")
	Leave     = mustLoad("registry", "leave")
	NoteReset = mustLoad("registry", "note_reset")
	// Plain counters (internal/counter).
	CounterIncr  = mustLoad("counter_incr")
	CounterFlush = mustLoad("counter_flush")
)

// Script is one Lua script and its SHA1 digest.
type Script struct {
	name, src, hash string
}

func mustLoad(names ...string) *Script {
	src := ""
	for _, n := range append([]string{"lib"}, names...) {
		b, err := files.ReadFile(n + ".lua")
		if err != nil {
			panic(err)
		}
		src += string(b) + "\n"
	}
	sum := sha1.Sum([]byte(src))
	return &Script{name: names[len(names)-1], src: src, hash: hex.EncodeToString(sum[:])}
}

// Name is the script's file name without ".lua".
func (s *Script) Name() string { return s.name }

// Hash is the SHA1 digest EVALSHA names the script by.
func (s *Script) Hash() string { return s.hash }

// Source is the full text sent with SCRIPT LOAD.
func (s *Script) Source() string { return s.src }

// Load sends SCRIPT LOAD for every script given (all of them when none is):
// on a Cluster client to every master.
func Load(ctx context.Context, c redis.Scripter, scripts ...*Script) error {
	if len(scripts) == 0 {
		scripts = []*Script{Assert, AssertMany, Reset, Drop, Members, Canary, Register, Heartbeat, Leave, NoteReset, CounterIncr, CounterFlush}
	}
	for _, s := range scripts {
		got, err := c.ScriptLoad(ctx, s.src).Result()
		if err != nil {
			return fmt.Errorf("headcount: loading script %s: %w", s.name, err)
		}
		if got != s.hash {
			return fmt.Errorf("headcount: script %s loaded as %s, want %s", s.name, got, s.hash)
		}
	}
	return nil
}

// IsNoScript reports whether err is Redis' NOSCRIPT error.
func IsNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// Run runs the script with EVALSHA; on NOSCRIPT it loads the script and
// tries once more.
func (s *Script) Run(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd {
	cmd := c.EvalSha(ctx, s.hash, keys, args...)
	if IsNoScript(cmd.Err()) {
		if err := Load(ctx, c, s); err != nil {
			return cmd
		}
		cmd = c.EvalSha(ctx, s.hash, keys, args...)
	}
	return cmd
}

// Call is one script call of a batch.
type Call struct {
	Script *Script
	Keys   []string
	Args   []any
	// Cmd holds the reply once RunBatch returns.
	Cmd *redis.Cmd
}

// RunBatch sends the calls in one pipeline (one round trip per Redis node on
// a Cluster client). Calls answered with NOSCRIPT are sent again, once, after
// loading their scripts. Each call's outcome is in its Cmd; the error
// returned is the first one of any call, for callers that only need to know
// whether all went well.
func RunBatch(ctx context.Context, c redis.UniversalClient, calls []*Call) error {
	return RunBatchWith(ctx, c, calls, nil)
}

// RunBatchWith is RunBatch with more commands in the same pipeline: with,
// if not nil, adds them (their outcome is in their own Cmds, and they are
// not sent again).
func RunBatchWith(ctx context.Context, c redis.UniversalClient, calls []*Call, with func(redis.Pipeliner)) error {
	if len(calls) == 0 && with == nil {
		return nil
	}
	send(ctx, c, calls, with)
	var retry []*Call
	seen := map[*Script]bool{}
	var load []*Script
	for _, call := range calls {
		if IsNoScript(call.Cmd.Err()) {
			retry = append(retry, call)
			if !seen[call.Script] {
				seen[call.Script] = true
				load = append(load, call.Script)
			}
		}
	}
	if len(retry) > 0 {
		if err := Load(ctx, c, load...); err != nil {
			return err
		}
		send(ctx, c, retry, nil)
	}
	for _, call := range calls {
		if err := call.Cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

func send(ctx context.Context, c redis.UniversalClient, calls []*Call, with func(redis.Pipeliner)) {
	pipe := c.Pipeline()
	if with != nil {
		with(pipe)
	}
	for _, call := range calls {
		call.Cmd = pipe.EvalSha(ctx, call.Script.hash, call.Keys, call.Args...)
	}
	// Exec's error is the first failed command's; each Cmd keeps its own.
	_, _ = pipe.Exec(ctx)
}
