package client_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quorumkv/quorumkv/client"
)

// TestFailover stops the node a client was configured with, and a node a
// round-robin client rotates over: operations keep succeeding through the
// others, within the configured attempts. Then a strict quorum that needs
// the stopped node fails with a QuorumError.
func TestFailover(t *testing.T) {
	cl := newCluster(t, 5)
	ctx := testCtx(t)
	rng := seeded(t, 20261126)

	// A key-aware client that knows only n1: it learns the others from
	// n1's table.
	recKA := newRecorder()
	defer recKA.close()
	ka := newClient(t, []string{cl.addr("n1")}, client.WithHTTPClient(&http.Client{Transport: recKA}))
	// A round-robin client over every node.
	recRR := newRecorder()
	defer recRR.close()
	rr := newClient(t, cl.endpoints(), client.WithRouting(client.RoundRobin), client.WithHTTPClient(&http.Client{Transport: recRR}))

	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%08x", rng.Uint32())
		if _, err := ka.Put(ctx, "fo", keys[i], []byte(keys[i])); err != nil {
			t.Fatal(err)
		}
	}
	// Stop n1 while the key-aware client is busy: requests in flight on
	// n1 and those that find it gone fail over to other nodes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var busyOps atomic.Int64
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[(w*len(keys)/4+i)%len(keys)]
				if _, err := ka.Put(ctx, "fo", k, []byte(k)); err != nil {
					errs <- fmt.Errorf("Put %s while n1 stops: %w", k, err)
					return
				}
				if _, err := ka.Get(ctx, "fo", k); err != nil {
					errs <- fmt.Errorf("Get %s while n1 stops: %w", k, err)
					return
				}
				busyOps.Add(2)
			}
		})
	}
	waitUntil(t, "operations before the stop", func() bool { return busyOps.Load() >= 20 || len(errs) > 0 })
	if err := cl.stop("n1"); err != nil {
		t.Fatal(err)
	}
	atStop := busyOps.Load()
	waitUntil(t, "operations after the stop", func() bool { return busyOps.Load() >= atStop+40 || len(errs) > 0 })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("stopped n1 under load: %d operations before the stop returned, %d in all", atStop, busyOps.Load())

	for name, c := range map[string]*client.Client{"key-aware": ka, "round-robin": rr} {
		rec := map[string]*recorder{"key-aware": recKA, "round-robin": recRR}[name]
		before := rec.attempts.Load()
		ops := 0
		for _, k := range keys {
			if _, err := c.Put(ctx, "fo", k, []byte(k+"-"+name)); err != nil {
				t.Fatalf("%s: Put %s with n1 down: %v", name, k, err)
			}
			res, err := c.Get(ctx, "fo", k)
			if err != nil {
				t.Fatalf("%s: Get %s with n1 down: %v", name, k, err)
			}
			if v, err := res.Value(); err != nil || string(v) != k+"-"+name {
				t.Fatalf("%s: Get %s = %q, %v", name, k, v, err)
			}
			ops += 2
		}
		attempts := int(rec.attempts.Load() - before)
		t.Logf("%s: %d operations in %d attempts with n1 down", name, ops, attempts)
		if attempts > ops*client.DefaultAttempts {
			t.Fatalf("%s: %d attempts for %d operations: more than %d each", name, attempts, ops, client.DefaultAttempts)
		}
		if attempts == ops && name == "round-robin" {
			t.Fatalf("%s: no attempt failed over, was n1 ever tried?", name)
		}
	}
	// The key-aware client still refreshes its table, from the nodes it
	// learned.
	if err := ka.Refresh(ctx); err != nil {
		t.Fatalf("Refresh with the only endpoint down: %v", err)
	}

	// A key of which n1 is a replica cannot get W=3 or R=3 strictly.
	var key string
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("strict-%d", i)
		if slices.Contains(ka.Replicas("fo", k), cl.addr("n1")) {
			key = k
		}
	}
	_, err := ka.Put(ctx, "fo", key, []byte("x"), client.W(3), client.Sloppy(false))
	var q *client.QuorumError
	if !errors.As(err, &q) || q.Op != "write" || q.Required != 3 || q.Acknowledged != 2 || !client.IsRetryable(err) {
		t.Fatalf("strict W=3 with a replica down: %v, want a write QuorumError 3/2", err)
	}
	t.Log(err)
	_, err = ka.Get(ctx, "fo", key, client.R(3), client.Sloppy(false))
	if !errors.As(err, &q) || q.Op != "read" || q.Required != 3 || q.Acknowledged != 2 {
		t.Fatalf("strict R=3 with a replica down: %v, want a read QuorumError 3/2", err)
	}
	// Sloppy, the same write succeeds: a fallback stands in.
	if _, err := ka.Put(ctx, "fo", key, []byte("x"), client.W(3)); err != nil {
		t.Fatalf("sloppy W=3 with a replica down: %v", err)
	}
}
