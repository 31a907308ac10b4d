package antientropy

// Anti-entropy benchmarks: what one full exchange round between two
// replicas costs (bytes on the wire, CPU, wall time) for d = 0, 1, 100 and
// 10,000 differing keys, against the naive baseline of streaming every key's
// digest; and what keeping the hash trees costs the write path.
//
//	QUORUMKV_AAE_KEYS=1000000 go test -run '^$' -bench Exchange -benchtime 1x -count 5 -timeout 3h ./antientropy/
//	go test -c -o antientropy.test ./antientropy/
//	for i in 1 2 3 4 5; do ./antientropy.test -test.run '^$' -test.bench Write -test.benchtime 2s; done
//
// scripts/aae-bench.sh runs both and prints medians. The results and how to
// read them are in docs/performance.md ("Anti-entropy"). Nothing here
// asserts a time: the benchmarks fail only if a round does not converge
// the replicas.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/quorumkv/quorumkv/storage"
)

const (
	benchPartitions = 1024
	benchValueSize  = 1024 // bytes of JSON per value
	benchBucket     = "bench"
	benchActor      = "bench-writer"
	benchBatch      = 1000 // objects per ApplyMany when loading and injecting
	benchEpoch      = int64(1_780_000_000_000_000_000)
)

// benchKey returns the i-th key of the data set, in the partition a hash of
// it picks.
func benchKey(i int) storage.Key {
	k := "key-" + strconv.Itoa(1e8 + i)[1:]
	return storage.Key{
		Partition: uint32(xxhash.Sum64String(benchBucket+"/"+k) % benchPartitions),
		Bucket:    benchBucket,
		Key:       k,
	}
}

// benchValue returns a JSON document of exactly benchValueSize bytes with
// random (barely compressible) padding.
func benchValue(rng *rand.Rand, i int, counter uint64) []byte {
	const hexDigits = "0123456789abcdef"
	b := make([]byte, 0, benchValueSize)
	b = fmt.Appendf(b, `{"id":%d,"version":%d,"pad":"`, i, counter)
	for len(b) < benchValueSize-2 {
		r := rng.Uint64()
		for j := 0; j < 16 && len(b) < benchValueSize-2; j++ {
			b = append(b, hexDigits[r&15])
			r >>= 4
		}
	}
	return append(b, '"', '}')
}

// benchObject returns the object of one write with dot (benchActor,
// counter): its context covers every earlier write of benchActor, so it
// supersedes any version with a smaller counter.
func benchObject(value []byte, counter uint64) *storage.Object {
	return &storage.Object{
		Context: storage.Context{VV: []storage.Entry{{Actor: benchActor, Counter: counter}}},
		Siblings: []storage.Sibling{{
			Dot:          storage.Dot{Actor: benchActor, Counter: counter},
			Value:        value,
			ContentType:  "application/json",
			LastModified: benchEpoch + int64(counter),
		}},
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// benchStore is a storage.Store as anti-entropy sees it on a node that keeps
// every partition and holds no hints.
type benchStore struct{ *storage.Store }

func (benchStore) Keeps(uint32) bool   { return true }
func (benchStore) Pending(uint32) bool { return false }
func (s benchStore) Apply(_ uint32, es []storage.PartitionEntry) error {
	return s.ApplyMany(es)
}

var _ Store = benchStore{}

// benchCluster is node a's view of a two-node cluster in which b keeps every
// partition. Calls to b are answered in process by Serve over b's store, as
// the server's internal API would, and their bytes are counted.
type benchCluster struct {
	parts []uint32
	peer  Local

	sent, recv, roots atomic.Int64
}

func (c *benchCluster) Partitions() []uint32     { return c.parts }
func (c *benchCluster) Replicas(uint32) []string { return []string{"b"} }
func (c *benchCluster) Members() []string        { return []string{"b"} }
func (c *benchCluster) Alive(string) bool        { return true }
func (c *benchCluster) Settled(uint32) bool      { return true }
func (c *benchCluster) Busy() bool               { return false }

func (c *benchCluster) Call(ctx context.Context, node, op string, body []byte) ([]byte, error) {
	if node != "b" {
		return nil, fmt.Errorf("unknown node %q", node)
	}
	resp, err := Serve(ctx, c.peer, op, body)
	c.sent.Add(int64(len(body)))
	c.recv.Add(int64(len(resp)))
	if op == OpRoots {
		c.roots.Add(int64(len(body) + len(resp)))
	}
	return resp, err
}

func (c *benchCluster) reset() {
	c.sent.Store(0)
	c.recv.Store(0)
	c.roots.Store(0)
}

// aaeFixture is two replicas holding the same n objects. BenchmarkExchange
// builds it once (it takes minutes at n = 1,000,000): the testing package
// runs a benchmark with sub-benchmarks once, and repeats each sub-benchmark
// -count times, so every round of every d shares it.
type aaeFixture struct {
	n         int
	dirs      []string
	a, b      *storage.Store
	dataBytes int64 // one replica: keys and values as stored
	// naiveBytes is what streaming every key's digest of one replica costs
	// on the wire: the responses to Digests of all leaves of every
	// partition, through the protocol. The requests (which list the 256
	// leaves) are left out: a dedicated stream would not need them, and
	// leaving them out makes the baseline stricter.
	naiveBytes int64
	digests    int // digests the naive stream carried (= n)
	depth      int // level of the leaves in a partition's tree
	counter    atomic.Uint64
	rounds     atomic.Uint64 // seeds the choice of keys to change
}

func (f *aaeFixture) close() {
	for _, s := range []*storage.Store{f.a, f.b} {
		if s != nil {
			_ = s.Close()
		}
	}
	for _, d := range f.dirs {
		_ = os.RemoveAll(d)
	}
}

func buildAAEFixture(b *testing.B) (*aaeFixture, error) {
	n := 100_000
	if v := os.Getenv("QUORUMKV_AAE_KEYS"); v != "" {
		x, err := strconv.Atoi(v)
		if err != nil || x <= 0 {
			return nil, fmt.Errorf("QUORUMKV_AAE_KEYS=%q: want a positive integer", v)
		}
		n = x
	}
	f := &aaeFixture{n: n, depth: NewTree(make([]uint64, storage.TreeLeaves)).Depth()}
	b.Cleanup(f.close) // also after a failed build
	for _, node := range []string{"a", "b"} {
		dir, err := os.MkdirTemp("", "quorumkv-aae-bench-"+node+"-")
		if err != nil {
			return nil, err
		}
		f.dirs = append(f.dirs, dir)
		s, err := storage.Open(storage.Config{Dir: dir, NodeID: node, Logger: discardLogger()})
		if err != nil {
			return nil, err
		}
		if node == "a" {
			f.a = s
		} else {
			f.b = s
		}
	}

	start := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	batch := make([]storage.PartitionEntry, 0, benchBatch)
	flush := func() error {
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() { errA = f.a.ApplyMany(batch) })
		wg.Go(func() { errB = f.b.ApplyMany(batch) })
		wg.Wait()
		batch = batch[:0]
		if errA != nil {
			return errA
		}
		return errB
	}
	for i := range n {
		c := uint64(i) + 1
		batch = append(batch, storage.PartitionEntry{Key: benchKey(i), Object: benchObject(benchValue(rng, i, c), c)})
		if len(batch) == benchBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	f.counter.Store(uint64(n))
	built := time.Since(start)
	quiet := aaeWaitQuiet(5 * time.Minute)

	keys := 0
	for p := range uint32(benchPartitions) {
		k, nb, err := f.a.PartitionStats(p)
		if err != nil {
			return nil, err
		}
		keys += k
		f.dataBytes += nb
	}
	if keys != n {
		return nil, fmt.Errorf("replica a holds %d keys, want %d", keys, n)
	}

	// The naive baseline, measured: stream every digest of b through the
	// same protocol an exchange uses.
	var naive atomic.Int64
	remote := NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
		resp, err := Serve(ctx, Local{Store: benchStore{f.b}}, op, body)
		naive.Add(int64(len(resp)))
		return resp, err
	})
	all := make([]int, storage.TreeLeaves)
	for i := range all {
		all[i] = i
	}
	for p := range uint32(benchPartitions) {
		ds, err := remote.Digests(context.Background(), p, all)
		if err != nil {
			return nil, err
		}
		f.digests += len(ds)
	}
	if f.digests != n {
		return nil, fmt.Errorf("naive stream carried %d digests, want %d", f.digests, n)
	}
	f.naiveBytes = naive.Load()
	fmt.Fprintf(os.Stderr, "aae fixture: %d keys per replica, %d bytes of data per replica, loaded both replicas in %v, then waited %v for background work to settle; naive digest stream %d bytes\n",
		n, f.dataBytes, built.Round(time.Millisecond), quiet.Round(time.Millisecond), f.naiveBytes)
	return f, nil
}

// inject gives d distinct random keys a new version at replica b only (a
// new dot that supersedes the current one), and returns b's new objects.
// fetchBytes is what a naive repair pays, after streaming every digest, to
// fetch the changed objects by key: Read requests and answers through the
// protocol, per partition.
func (f *aaeFixture) fetchBytes(ctx context.Context, changed []storage.PartitionEntry) (int, error) {
	byPart := map[uint32][]storage.Key{}
	for _, e := range changed {
		byPart[e.Key.Partition] = append(byPart[e.Key.Partition], e.Key)
	}
	total := 0
	for p, keys := range byPart {
		r := NewRemote(func(ctx context.Context, op string, body []byte) ([]byte, error) {
			resp, err := Serve(ctx, Local{Store: benchStore{f.b}}, op, body)
			total += len(body) + len(resp)
			return resp, err
		})
		if _, err := r.Read(ctx, p, keys); err != nil {
			return 0, err
		}
	}
	return total, nil
}

func (f *aaeFixture) inject(rng *rand.Rand, d int) ([]storage.PartitionEntry, error) {
	if d > f.n {
		return nil, fmt.Errorf("d = %d exceeds the %d keys", d, f.n)
	}
	chosen := make(map[int]bool, d)
	var keys []storage.Key
	batch := make([]storage.PartitionEntry, 0, benchBatch)
	for len(chosen) < d {
		i := rng.IntN(f.n)
		if chosen[i] {
			continue
		}
		chosen[i] = true
		c := f.counter.Add(1)
		k := benchKey(i)
		keys = append(keys, k)
		batch = append(batch, storage.PartitionEntry{Key: k, Object: benchObject(benchValue(rng, i, c), c)})
		if len(batch) == benchBatch || len(chosen) == d {
			if err := f.b.ApplyMany(batch); err != nil {
				return nil, err
			}
			batch = batch[:0]
		}
	}
	return f.b.Read(keys)
}

// converged reports whether every partition's root is equal on a and b.
func (f *aaeFixture) converged(ctx context.Context) (bool, error) {
	parts := make([]uint32, benchPartitions)
	for i := range parts {
		parts[i] = uint32(i)
	}
	ra, err := Local{Store: benchStore{f.a}}.Roots(ctx, parts)
	if err != nil {
		return false, err
	}
	rb, err := Local{Store: benchStore{f.b}}.Roots(ctx, parts)
	if err != nil {
		return false, err
	}
	for i := range ra {
		if ra[i] != rb[i] {
			return false, nil
		}
	}
	return true, nil
}

// aaeCPUTime returns the user and system CPU time of this process so far.
func aaeCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// aaeWaitQuiet waits, up to limit, until the process uses less than 5% of a
// core over a quarter second (Pebble's flushes and compactions after a
// load are done), so that they do not count as a round's CPU time. It
// returns how long it waited.
func aaeWaitQuiet(limit time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < limit {
		c := aaeCPUTime()
		time.Sleep(250 * time.Millisecond)
		if aaeCPUTime()-c < 12500*time.Microsecond {
			break
		}
	}
	return time.Since(start)
}

// BenchmarkExchange measures one full anti-entropy round of node a with
// node b over every partition, by the Runner's own round (Runner.Repair):
// roots compared 256 partitions per request, and an Exchange for each
// partition whose roots differ. Before each round, d random keys get a new
// version at b only; the round must repair exactly those, and leave every
// root equal. QUORUMKV_AAE_KEYS sets n (default 100,000), QUORUMKV_AAE_D
// the list of d (default 0,1,100,10000, those up to n).
//
// Metrics per round: bytes/round (protocol bytes sent and received, roots
// included), root-bytes/round (the root comparison alone), pct-of-data
// (bytes/round over one replica's data), naive-bytes/round (streaming every
// key's digest plus sending the d changed objects, measured through the same
// protocol, with no request bytes at all), naive-fetch-bytes/round (the
// same digest stream, then fetching the d objects by key with Read requests,
// as a naive repair must), bound-bytes (d × (object size on the wire + tree depth × 8)),
// cpu-s/round (user+system time of the process: both replicas, protocol
// encoding and decoding, Pebble), keys-repaired. ns/op is the round's wall
// time.
func BenchmarkExchange(b *testing.B) {
	f, err := buildAAEFixture(b)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	parts := make([]uint32, benchPartitions)
	for i := range parts {
		parts[i] = uint32(i)
	}
	cluster := &benchCluster{parts: parts, peer: Local{Store: benchStore{f.b}}}
	runner := New(Config{
		ExchangeRate: 1e9,
		ByteRate:     1e15,
		CallTimeout:  time.Hour,
		Logger:       discardLogger(),
	}, cluster, benchStore{f.a})

	var ds []int
	for _, d := range []int{0, 1, 100, 10_000} {
		if d <= f.n {
			ds = append(ds, d)
		}
	}
	if v := os.Getenv("QUORUMKV_AAE_D"); v != "" {
		ds = nil
		for x := range strings.SplitSeq(v, ",") {
			d, err := strconv.Atoi(strings.TrimSpace(x))
			if err != nil || d < 0 || d > f.n {
				b.Fatalf("QUORUMKV_AAE_D=%q: want comma-separated counts in [0, %d]", v, f.n)
			}
			ds = append(ds, d)
		}
	}
	for _, d := range ds {
		b.Run(fmt.Sprintf("d=%d", d), func(b *testing.B) {
			b.StopTimer()
			rng := rand.New(rand.NewPCG(uint64(d), f.rounds.Add(1)))
			var bytes, roots, objBytes, fetchBytes, cpu float64
			var repaired int
			for range b.N {
				if ok, err := f.converged(ctx); err != nil || !ok {
					b.Fatalf("replicas differ before the round (err %v)", err)
				}
				changed, err := f.inject(rng, d)
				if err != nil {
					b.Fatal(err)
				}
				if len(changed) != d {
					b.Fatalf("%d keys changed, want %d", len(changed), d)
				}
				if d > 0 {
					objBytes += float64(len(appendEntries(nil, changed)))
					fb, err := f.fetchBytes(ctx, changed)
					if err != nil {
						b.Fatal(err)
					}
					fetchBytes += float64(fb)
				}
				aaeWaitQuiet(time.Minute)
				runtime.GC()
				cluster.reset()
				before := runner.Stats()
				c0 := aaeCPUTime()
				b.StartTimer()
				res, err := runner.Repair(ctx, nil, false)
				b.StopTimer()
				cpu += (aaeCPUTime() - c0).Seconds()
				if err != nil {
					b.Fatal(err)
				}
				if res.Pulled != d || res.Pushed != 0 {
					b.Fatalf("round pulled %d and pushed %d keys, want %d and 0: %+v", res.Pulled, res.Pushed, d, res)
				}
				after := runner.Stats()
				sent, recv := cluster.sent.Load(), cluster.recv.Load()
				if int64(after.BytesSent-before.BytesSent) != sent || int64(after.BytesRecv-before.BytesRecv) != recv {
					b.Fatalf("runner counted %d/%d bytes, the transport %d/%d", after.BytesSent-before.BytesSent, after.BytesRecv-before.BytesRecv, sent, recv)
				}
				if ok, err := f.converged(ctx); err != nil || !ok {
					b.Fatalf("replicas differ after the round (err %v)", err)
				}
				bytes += float64(sent + recv)
				roots += float64(cluster.roots.Load())
				repaired += res.Pulled + res.Pushed
			}
			perRound := func(x float64) float64 { return x / float64(b.N) }
			b.ReportMetric(perRound(bytes), "bytes/round")
			b.ReportMetric(perRound(roots), "root-bytes/round")
			b.ReportMetric(100*perRound(bytes)/float64(f.dataBytes), "pct-of-data")
			b.ReportMetric(float64(f.naiveBytes)+perRound(objBytes), "naive-bytes/round")
			b.ReportMetric(float64(f.naiveBytes)+perRound(fetchBytes), "naive-fetch-bytes/round")
			b.ReportMetric(perRound(objBytes)+float64(d*f.depth*8), "bound-bytes")
			b.ReportMetric(perRound(cpu), "cpu-s/round")
			b.ReportMetric(perRound(float64(repaired)), "keys-repaired")
		})
	}
}

// BenchmarkWrite measures client writes (Store.Put, 1 KiB JSON, each to a
// new key, synced) with and without the hash-tree leaf update in the write
// batch (storage.Config.DisableTree), by one writer and by 64 concurrent
// ones. -count repeats each variant back to back; to spread load from
// elsewhere on the machine over both alike, run it -count 1 several times
// (scripts/aae-bench.sh does).
func BenchmarkWrite(b *testing.B) {
	for _, writers := range []int{1, 64} {
		for _, tree := range []bool{true, false} {
			name := fmt.Sprintf("writers=%d/tree=off", writers)
			if tree {
				name = fmt.Sprintf("writers=%d/tree=on", writers)
			}
			b.Run(name, func(b *testing.B) { benchWrite(b, writers, tree) })
		}
	}
}

func benchWrite(b *testing.B, writers int, tree bool) {
	s, err := storage.Open(storage.Config{Dir: b.TempDir(), NodeID: "w", Logger: discardLogger(), DisableTree: !tree})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := benchValue(rand.New(rand.NewPCG(3, 4)), 0, 0)
	var next atomic.Int64
	put := func() error {
		_, err := s.Put(benchKey(int(next.Add(1))), storage.Write{
			Value:       value,
			ContentType: "application/json",
			Now:         time.Unix(0, benchEpoch),
		})
		return err
	}
	runtime.GC()
	c0 := aaeCPUTime()
	b.ResetTimer()
	if writers == 1 {
		for range b.N {
			if err := put(); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := put(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	cpu := aaeCPUTime() - c0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}
