package wsconn

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Redis 7.0 and later commands (quoted, in capitals, as this code writes
// them), command options, and the go-redis methods that send them. The
// README says Redis 6.2 is intended but the suites run on Redis 7.0 alone,
// so a command newer than 6.2 would pass every test and fail on 6.2.
var (
	redis7Commands = regexp.MustCompile(`["'](SPUBLISH|SSUBSCRIBE|SUNSUBSCRIBE|FUNCTION|FCALL|FCALL_RO|EVAL_RO|EVALSHA_RO|` +
		`LMPOP|BLMPOP|ZMPOP|BZMPOP|SINTERCARD|ZINTERCARD|EXPIRETIME|PEXPIRETIME|LCS|WAITAOF|` +
		`HEXPIRE|HPEXPIRE|HEXPIREAT|HPEXPIREAT|HTTL|HPTTL|HPERSIST|HEXPIRETIME|HGETDEL|HGETEX|HSETEX|SHARDS|NO-EVICT|NO-TOUCH)["']`)
	// EXPIRE and its kin with a fourth argument: NX, XX, GT or LT (7.0).
	redis7ExpireOptions = regexp.MustCompile(`(?i)redis\.p?call\(\s*['"]P?EXPIRE(AT)?['"]\s*,[^,()]+,[^,()]+,`)
	redis7Methods       = regexp.MustCompile(`\.(SPublish|SSubscribe|SUnsubscribe|Function\w+|FCall|FCallRO|FCallRo|EvalRO|EvalShaRO|` +
		`LMPop|BLMPop|ZMPop|BZMPop|SInterCard|ZInterCard|ExpireTime|PExpireTime|ExpireNX|ExpireXX|ExpireGT|ExpireLT|` +
		`LCS|WaitAOF|ClusterShards|HExpire\w*|HPExpire\w*|HTTL|HPTTL|HPersist|HGetDel|HGetEX|HSetEX)\(`)
)

// redis7Allowed lists the files allowed to use a Redis 7-only command,
// each behind a version check with a fallback for 6.2.
var redis7Allowed = map[string]bool{
	// Sharded pub/sub for presence events: SPUBLISH falls back to PUBLISH
	// on an error, SSUBSCRIBE to SUBSCRIBE (TestPresenceWithoutShardedPubSub).
	"internal/lua/presence.lua":     true,
	"internal/icounter/presence.go": true,
	"internal/icounter/feed.go":     true,
}

// TestNoRedis7OnlyCommands scans the module's code (Go outside tests, and
// the Lua scripts) for Redis 7-only commands: each must sit behind a
// version check with a fallback, in a file listed in redis7Allowed.
func TestNoRedis7OnlyCommands(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	scanned := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		isGo := strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go")
		if !isGo && !strings.HasSuffix(path, ".lua") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		for i, line := range strings.Split(string(b), "\n") {
			for _, re := range []*regexp.Regexp{redis7Commands, redis7ExpireOptions, redis7Methods} {
				if m := re.FindString(line); m != "" && !redis7Allowed[filepath.ToSlash(rel)] {
					t.Errorf("%s:%d: %s is Redis 7 or newer; keep it behind a version check with a fallback for 6.2, list the file in redis7Allowed, and say so in the README's Redis section",
						rel, i+1, m)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned < 20 {
		t.Fatalf("scanned %d files under %s: not the module", scanned, root)
	}
	// The patterns find what they are for.
	for _, s := range []string{`rdb.SPublish(ctx, ch, msg)`, `c.Do(ctx, "FCALL", "f", 0)`, `redis.call('PEXPIRE', key, ttl, 'GT')`,
		`redis.call("SINTERCARD", 2, a, b)`, `c.ExpireGT(ctx, k, d)`} {
		if !redis7Commands.MatchString(s) && !redis7ExpireOptions.MatchString(s) && !redis7Methods.MatchString(s) {
			t.Errorf("the patterns miss %s", s)
		}
	}
	for _, s := range []string{`redis.call('PEXPIRE', key, ttl)`, `c.GetDel(ctx, k)`, `h.ps = rdb.PSubscribe(ctx, p)`, `lua.Load(ctx, c, lua.Assert)`} {
		if redis7Commands.MatchString(s) || redis7ExpireOptions.MatchString(s) || redis7Methods.MatchString(s) {
			t.Errorf("the patterns take %s, a Redis 6.2 call, for Redis 7", s)
		}
	}
}
