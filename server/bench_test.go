package server

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// doc is a 1 KiB JSON document.
var doc = `{"payload":"` + strings.Repeat("x", 1024-14) + `"}`

func benchRequest(b *testing.B, client *http.Client, method, url, body string, want int, headers ...string) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Fatalf("%s %s: %d", method, url, resp.StatusCode)
	}
}

// BenchmarkRoundTrip is one client request at a time through a 3-node
// in-process cluster over loopback HTTP (N=3, R=W=2): the coordinator's
// latency without queueing.
func BenchmarkRoundTrip(b *testing.B) {
	c := newTestCluster(b, 3, func(cfg *Config) { cfg.Ring.Partitions = 1024 })
	base := "http://" + c.peers["n1"] + "/v1/kv/bench/"
	b.Run("put", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			benchRequest(b, c.client, "PUT", base+fmt.Sprint(i), doc, 204)
		}
	})
	b.Run("get", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			benchRequest(b, c.client, "GET", base+fmt.Sprint(i%1000), "", 200)
		}
	})
}

// BenchmarkLoad drives a 3-node in-process cluster (N=3, R=W=2, 1 KiB JSON)
// with 64 concurrent clients spread over the nodes, and reports ops/s and
// latency percentiles. Clients, coordinators and replicas share the
// machine's cores. "put" is a plain PUT (it supersedes what R replicas
// hold); "put-ctx" carries an X-Context (here the empty one: a blind
// write), as a client that kept the context of its last read does.
func BenchmarkLoad(b *testing.B) {
	c := newTestCluster(b, 3, func(cfg *Config) { cfg.Ring.Partitions = 1024 })
	const keys = 10000
	for i := range keys {
		benchRequest(b, c.client, "PUT", "http://"+c.peers["n1"]+"/v1/kv/bench/"+fmt.Sprint(i)+"?w=3", doc, 204)
	}
	empty := storage.EncodeContext(storage.Context{})
	for _, op := range []string{"put", "put-ctx", "get"} {
		b.Run(op, func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			var seq atomic.Int64
			b.SetParallelism(64 / runtime.GOMAXPROCS(0))
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					i := seq.Add(1)
					url := "http://" + c.peers[c.ids[i%3]] + "/v1/kv/bench/" + fmt.Sprint(i%keys)
					t0 := time.Now()
					switch op {
					case "put":
						benchRequest(b, c.client, "PUT", url, doc, 204)
					case "put-ctx":
						benchRequest(b, c.client, "PUT", url+"-ctx", doc, 204, "X-Context", empty)
					default:
						benchRequest(b, c.client, "GET", url, "", 200)
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			slices.Sort(lat)
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
