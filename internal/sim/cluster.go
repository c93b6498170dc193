package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of masters (no replicas) started by
// StartCluster on loopback, each a redis-server child process that the
// kernel kills when this process dies.
type Cluster struct {
	Addrs []string
	procs []*exec.Cmd
	dir   string
}

const clusterSlots = 16384

// spawn forks every redis-server from one locked OS thread, so that
// Pdeathsig (which fires when the forking thread exits) fires only when the
// process does.
var spawnReq = make(chan spawnCall)

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for c := range spawnReq {
			c.done <- c.cmd.Start()
		}
	}()
}

// StartCluster starts masters redis-server processes with cluster mode on,
// splits the slots evenly between them, and waits until the cluster is ok.
func StartCluster(ctx context.Context, masters int) (*Cluster, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found in PATH (apt-get install -y redis-server, or make install-redis): %w", err)
	}
	dir, err := os.MkdirTemp("", "hcsim-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	for i := range masters {
		if err := c.startOne(ctx, bin, i); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.form(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startOne(ctx context.Context, bin string, i int) error {
	var lastErr error
	for range 10 {
		port, err := freePort()
		if err != nil {
			return err
		}
		d := filepath.Join(c.dir, strconv.Itoa(i))
		_ = os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		log, err := os.Create(filepath.Join(d, "redis.log"))
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(d, "nodes.conf"),
			"--dir", d, "--save", "", "--appendonly", "no", "--protected-mode", "no",
			"--maxclients", "20000")
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		done := make(chan error, 1)
		spawnReq <- spawnCall{cmd, done}
		if err := <-done; err != nil {
			log.Close()
			return err
		}
		log.Close()
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitPing(ctx, addr, exited); lastErr == nil {
			c.procs = append(c.procs, cmd)
			c.Addrs = append(c.Addrs, addr)
			return nil
		}
		_ = cmd.Process.Kill()
		<-exited
	}
	return fmt.Errorf("start redis-server: %w", lastErr)
}

// freePort returns a loopback port that is free, as is its cluster bus port
// (port + 10000).
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if port+10000 > 65535 {
			l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		l.Close()
		if err != nil {
			continue
		}
		bus.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair found")
}

func waitPing(ctx context.Context, addr string, exited <-chan struct{}) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := rc.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited: %v", addr, err)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis-server on %s does not answer: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process
	}
}

func (c *Cluster) form(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	clients := make([]*redis.Client, len(c.Addrs))
	for i, a := range c.Addrs {
		clients[i] = redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
		defer clients[i].Close()
	}
	for i, rc := range clients {
		if err := rc.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("CLUSTER SET-CONFIG-EPOCH on %s: %w", c.Addrs[i], err)
		}
		lo, hi := i*clusterSlots/len(clients), (i+1)*clusterSlots/len(clients)-1
		if err := rc.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE %d %d on %s: %w", lo, hi, c.Addrs[i], err)
		}
	}
	for _, a := range c.Addrs[1:] {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		if err := clients[0].ClusterMeet(ctx, host, strconv.Itoa(p)).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", a, err)
		}
	}
	for {
		ready := true
		for _, rc := range clients {
			info, err := rc.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(clients))+"\r") ||
				!strings.Contains(info, "cluster_slots_ok:16384") {
				ready = false
				break
			}
		}
		if ready {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("cluster on %s not ready: %w", strings.Join(c.Addrs, ","), ctx.Err())
		}
		time.Sleep(20 * time.Millisecond) // polling the cluster's state
	}
}

// Close kills the servers and removes their directory.
func (c *Cluster) Close() {
	for _, p := range c.procs {
		_ = p.Process.Kill()
	}
	_ = os.RemoveAll(c.dir)
}
