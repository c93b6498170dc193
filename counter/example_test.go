package counter_test

import (
	"context"
	"fmt"
	"log"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/headcount-go/headcount/counter"
)

// exampleClient connects to the Redis server the tests run against (see
// TestMain). A program would use redis.NewClient(&redis.Options{Addr:
// "localhost:6379"}), redis.NewFailoverClient or redis.NewClusterClient.
func exampleClient() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: redisAddr})
}

// examplePrefix makes name unique to this run of the tests, so that runs
// sharing a Redis server never see each other's counts.
func examplePrefix(name string) string {
	return name + "-" + runID + "-" + strconv.FormatInt(exampleSeq.Add(1), 10)
}

// Page views: one shared number per page, kept when a process exits.
func ExampleShared() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()

	views, err := counter.NewShared(rc, counter.SharedOptions{Prefix: examplePrefix("views")})
	if err != nil {
		log.Fatal(err)
	}
	defer views.Close(ctx)

	for range 3 {
		if _, err := views.Inc(ctx, "/pricing", 1); err != nil {
			log.Print(err) // Redis is down: this view is not counted
		}
	}
	n, _ := views.Get(ctx, "/pricing")
	fmt.Println("/pricing:", n)

	old, _ := views.Del(ctx, "/pricing")
	n, _ = views.Get(ctx, "/pricing")
	fmt.Println("deleted at", old, "now", n)
	// Output:
	// /pricing: 3
	// deleted at 3 now 0
}

// A quota with IncIf: at most 2 exports per customer, cluster-wide, however
// many processes ask at once.
func ExampleShared_IncIf() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()

	exports, err := counter.NewShared(rc, counter.SharedOptions{Prefix: examplePrefix("exports")})
	if err != nil {
		log.Fatal(err)
	}
	defer exports.Close(ctx)

	below2 := counter.Cond{Op: counter.Lt, Operand: 2}
	for range 3 {
		n, ok, err := exports.IncIf(ctx, "customer-42", 1, below2)
		switch {
		case err != nil:
			log.Print(err)
		case ok:
			fmt.Println("export", n, "allowed")
		default:
			fmt.Println("refused: quota of", n, "used")
		}
	}
	// Output:
	// export 1 allowed
	// export 2 allowed
	// refused: quota of 2 used
}

// API calls at a high rate: Inc is an add in memory; the deltas of all keys
// go to Redis in one batch every FlushInterval.
func ExampleSharedLax() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()
	prefix := examplePrefix("calls")

	calls, err := counter.NewSharedLax(rc, counter.SharedLaxOptions{
		SharedOptions: counter.SharedOptions{Prefix: prefix},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer calls.Close(ctx) // sends what is still buffered

	for range 1000 {
		_, _ = calls.Inc(ctx, "GET /search", 1) // no round trip, never blocks
	}
	here, _ := calls.Get(ctx, "GET /search") // exact for this process
	fmt.Println("this process sees", here)

	// Another process (here a strict counter of the same prefix) sees the
	// calls once they are flushed: within FlushInterval, or at once after
	// Flush.
	other, err := counter.NewShared(rc, counter.SharedOptions{Prefix: prefix})
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close(ctx)
	if err := calls.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	there, _ := other.Get(ctx, "GET /search")
	fmt.Println("another process sees", there)
	// Output:
	// this process sees 1000
	// another process sees 1000
}

// Jobs in progress per queue, counted by two workers. Each worker owns a
// slice of every key; Total sums the live workers' slices. A worker that
// closes takes its slice with it at once; one that crashes loses it after
// DeadInstanceThreshold, when any other worker reaps it.
func ExamplePerInstance() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()
	prefix := examplePrefix("jobs")

	// Two processes, in one program for the example.
	w1, err := counter.NewPerInstance(rc, counter.PerInstanceOptions{Prefix: prefix, InstanceID: "worker-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer w1.Close(ctx)
	w2, err := counter.NewPerInstance(rc, counter.PerInstanceOptions{Prefix: prefix, InstanceID: "worker-2"})
	if err != nil {
		log.Fatal(err)
	}

	_, _ = w1.Inc(ctx, "emails", 2) // two jobs started
	_, _ = w2.Inc(ctx, "emails", 3)
	v, _ := w1.Dec(ctx, "emails", 1) // one done
	fmt.Printf("emails in progress: %d (worker-1 runs %d)\n", v.Total, v.Mine)

	_ = w2.Close(ctx) // worker-2 shuts down: its 3 jobs leave the count
	v, _ = w1.Get(ctx, "emails")
	fmt.Printf("after worker-2 left: %d\n", v.Total)
	// Output:
	// emails in progress: 4 (worker-1 runs 1)
	// after worker-2 left: 1
}

// A cluster-wide limit that frees itself when a process dies: at most 2
// open streams per tenant.
func ExamplePerInstance_IncIf() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()

	streams, err := counter.NewPerInstance(rc, counter.PerInstanceOptions{Prefix: examplePrefix("streams")})
	if err != nil {
		log.Fatal(err)
	}
	defer streams.Close(ctx)

	open := func(tenant string) {
		v, ok, err := streams.IncIf(ctx, tenant, 1, counter.Cond{Op: counter.Lt, Operand: 2})
		switch {
		case err != nil:
			log.Print(err)
		case ok:
			fmt.Println(tenant, "stream opened:", v.Total, "open")
		default:
			fmt.Println(tenant, "refused:", v.Total, "open")
		}
	}
	open("acme")
	open("acme")
	open("acme")
	_, _ = streams.Dec(ctx, "acme", 1) // a stream ends
	open("acme")
	// Output:
	// acme stream opened: 1 open
	// acme stream opened: 2 open
	// acme refused: 2 open
	// acme stream opened: 2 open
}

// Viewers per live video, changing thousands of times a second: lax
// changes stay in memory and every changed slice goes to Redis in one batch
// every FlushInterval.
func ExamplePerInstanceLax() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()
	prefix := examplePrefix("viewers")

	edge1, err := counter.NewPerInstanceLax(rc, counter.PerInstanceLaxOptions{
		PerInstanceOptions: counter.PerInstanceOptions{Prefix: prefix, InstanceID: "edge-1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer edge1.Close(ctx)
	edge2, err := counter.NewPerInstance(rc, counter.PerInstanceOptions{Prefix: prefix, InstanceID: "edge-2"})
	if err != nil {
		log.Fatal(err)
	}
	defer edge2.Close(ctx)

	for range 500 {
		_, _ = edge1.Inc(ctx, "video-7", 1) // an add in memory
	}
	_, _ = edge1.Dec(ctx, "video-7", 20)
	_, _ = edge2.Inc(ctx, "video-7", 5)

	v, _ := edge1.Get(ctx, "video-7")
	fmt.Println("edge-1's own viewers:", v.Mine)
	_ = edge1.Flush(ctx) // or wait for FlushInterval
	v, _ = edge2.Get(ctx, "video-7")
	fmt.Printf("edge-2 sees %d viewers, %d of them its own\n", v.Total, v.Mine)
	// Output:
	// edge-1's own viewers: 480
	// edge-2 sees 485 viewers, 5 of them its own
}

// A handle for a key changed often: each viewer joining or leaving is an
// atomic add, with no look-up of the key.
func ExamplePerInstanceLax_Handle() {
	rc := exampleClient()
	defer rc.Close()
	ctx := context.Background()
	edge, err := counter.NewPerInstanceLax(rc, counter.PerInstanceLaxOptions{
		PerInstanceOptions: counter.PerInstanceOptions{Prefix: examplePrefix("viewers"), InstanceID: "edge-1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer edge.Close(ctx)

	video, err := edge.Handle("video-7")
	if err != nil {
		log.Fatal(err)
	}
	defer video.Close()
	for range 300 {
		_, _ = video.Inc(1)
	}
	v, _ := video.Dec(1)
	fmt.Println("viewers here:", v.Mine)
	v, _ = edge.Get(ctx, "video-7") // the same count, by key
	fmt.Println("by key:", v.Mine)
	// Output:
	// viewers here: 299
	// by key: 299
}
