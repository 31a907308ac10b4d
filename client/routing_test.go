package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/client"
)

// workload puts then gets n random keys and returns the attempts it made.
func workload(t *testing.T, ctx context.Context, c *client.Client, rec *recorder, rng *rand.Rand, n int) int {
	t.Helper()
	before := rec.attempts.Load()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k-%016x", rng.Uint64())
		if _, err := c.Put(ctx, "route", keys[i], []byte(`{"i":1}`), client.ContentType("application/json")); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		if _, err := c.Get(ctx, "route", k); err != nil {
			t.Fatal(err)
		}
	}
	return int(rec.attempts.Load() - before)
}

// coordinatedDelta runs fn and returns how many client requests the nodes
// coordinated as a replica of the key ("true") and as a non-replica
// ("false") meanwhile, from quorumkv_requests_coordinated_total.
func coordinatedDelta(t *testing.T, cl *cluster, fn func()) map[string]float64 {
	t.Helper()
	before, err := cl.coordinatedTotals()
	if err != nil {
		t.Fatal(err)
	}
	fn()
	after, err := cl.coordinatedTotals()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, k := range []string{"true", "false"} {
		out[k] = after[k] - before[k]
	}
	return out
}

// TestKeyAwareRouting checks, from the nodes' metrics, that the key-aware
// client sends every request to a replica of its key (and round-robin does
// not), and that after a sixth node joins, the client notices the new ring
// through X-Ring-Version and routes by the new table.
func TestKeyAwareRouting(t *testing.T) {
	cl := newCluster(t, 5)
	ctx := testCtx(t)
	rng := seeded(t, 0x5eed)

	recKA := newRecorder()
	defer recKA.close()
	// No periodic refresh during the test: the client must notice the ring
	// change from X-Ring-Version alone.
	ka := newClient(t, cl.endpoints(), client.WithHTTPClient(&http.Client{Transport: recKA}), client.WithRefreshInterval(time.Hour))
	recRR := newRecorder()
	defer recRR.close()
	rr := newClient(t, cl.endpoints(), client.WithRouting(client.RoundRobin), client.WithHTTPClient(&http.Client{Transport: recRR}))

	var attempts int
	d := coordinatedDelta(t, cl, func() { attempts = workload(t, ctx, ka, recKA, rng, 100) })
	t.Logf("key-aware: %d attempts, coordinated %v", attempts, d)
	if d["true"]+d["false"] == 0 {
		t.Fatal("quorumkv_requests_coordinated_total did not move: does the server export it?")
	}
	if d["false"] != 0 || int(d["true"]) != attempts {
		t.Fatalf("key-aware: coordinated by a replica %v, by a non-replica %v; want %d and 0", d["true"], d["false"], attempts)
	}
	d = coordinatedDelta(t, cl, func() { attempts = workload(t, ctx, rr, recRR, rng, 100) })
	t.Logf("round-robin: %d attempts, coordinated %v", attempts, d)
	if d["false"] == 0 {
		t.Fatalf("round-robin: every request went to a replica of its key (%v)", d)
	}

	// A sixth node joins: the placement changes.
	old := ka.RingVersion()
	id, err := cl.addNode()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.waitSettled(settleTimeout); err != nil {
		t.Fatal(err)
	}
	// Settled once is not settled everywhere at the next look (a node may
	// still be suspected under load): poll for one version on all nodes.
	var want, why string
	for settleBy := time.Now().Add(settleTimeout); ; {
		want, why, err = cl.settledVersion()
		if err == nil && want != "" && want != old {
			break
		}
		if time.Now().After(settleBy) {
			t.Fatalf("after %s joined: ring version %q (was %q): %s %v", id, want, old, why, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s joined: ring %s -> %s", id, old, want)
	ctx = testCtx(t) // the join and its settling may have used the first one up
	// What the client notices is the X-Ring-Version of its next answer.
	if ka.RingVersion() != old {
		t.Fatalf("the table changed before any request: %s", ka.RingVersion())
	}
	deadline := time.Now().Add(10 * time.Second)
	for ka.RingVersion() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the client's table is still %s, want %s", ka.RingVersion(), want)
		}
		if _, err := ka.Get(ctx, "route", "any"); err != nil && !isNotFound(err) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	newAddr := cl.addr(id)
	holds := 0
	for i := range 200 {
		if slices.Contains(ka.Replicas("route", fmt.Sprint(i)), newAddr) {
			holds++
		}
	}
	if holds == 0 {
		t.Fatalf("the new table gives %s no key", id)
	}
	d = coordinatedDelta(t, cl, func() { attempts = workload(t, ctx, ka, recKA, rng, 100) })
	t.Logf("key-aware after the join: %d attempts, coordinated %v", attempts, d)
	if d["false"] != 0 || int(d["true"]) != attempts {
		t.Fatalf("key-aware after the join: coordinated by a replica %v, by a non-replica %v; want %d and 0", d["true"], d["false"], attempts)
	}
}

func isNotFound(err error) bool { return errors.Is(err, client.ErrNotFound) }
