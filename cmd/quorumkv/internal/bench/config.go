// Package bench is the load generator behind `quorumkv bench`: YCSB-style
// workloads driven through the Go client, latencies in HdrHistograms,
// staleness of reads measured against acknowledged writes, and PBS-style
// probes (how long after a write a read at R sees it).
package bench

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Workload names the operation mix.
type Workload string

// The workloads: YCSB core A, B, C and F, and writes only.
const (
	WorkloadA     Workload = "a"     // 50% read, 50% update
	WorkloadB     Workload = "b"     // 95% read, 5% update
	WorkloadC     Workload = "c"     // 100% read
	WorkloadF     Workload = "f"     // 50% read, 50% read-modify-write (client.Update)
	WorkloadWrite Workload = "write" // 100% update
)

// Distribution names how keys are chosen.
type Distribution string

// The key distributions.
const (
	Zipfian Distribution = "zipfian" // YCSB's scrambled zipfian, constant 0.99
	Uniform Distribution = "uniform"
)

// Pair is one R/W combination of a sweep.
type Pair struct{ R, W int }

func (p Pair) String() string { return fmt.Sprintf("%d/%d", p.R, p.W) }

// ParsePairs parses a sweep: comma-separated R/W pairs such as "1/1,2/2".
func ParsePairs(s string) ([]Pair, error) {
	var out []Pair
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		rs, ws, ok := strings.Cut(f, "/")
		r, err1 := strconv.Atoi(rs)
		w, err2 := strconv.Atoi(ws)
		if !ok || err1 != nil || err2 != nil || r < 1 || w < 1 {
			return nil, fmt.Errorf("%q: want R/W with R and W at least 1, like 2/2", f)
		}
		out = append(out, Pair{r, w})
	}
	return out, nil
}

// Config is one bench run. DefaultConfig has every default.
type Config struct {
	// Endpoints are the nodes' HTTP addresses (host:port or http://host:port).
	// Default http://127.0.0.1:8080, n1 of `quorumkv dev`.
	Endpoints []string
	// RoundRobin rotates requests over Endpoints instead of sending each to
	// a replica of its key. Default false (key-aware).
	RoundRobin bool
	// Workload is the operation mix. Default WorkloadA.
	Workload Workload
	// Distribution chooses keys. Default Zipfian.
	Distribution Distribution
	// Seed seeds every random choice (keys, operations, probe sampling).
	// Default 0: a random seed, printed.
	Seed uint64
	// Records is the number of keys in the keyspace. Default 10000.
	Records int
	// ValueSize is the size of every written JSON document, bytes. Default
	// 1024, at least MinValueSize.
	ValueSize int
	// Bucket holds the keys. Default "bench".
	Bucket string
	// Concurrency is the number of workers, each with one operation in
	// flight. Default 64.
	Concurrency int
	// Duration is how long each R/W combination is measured. Default 30s.
	Duration time.Duration
	// Warmup runs the workload before each measurement, not counted.
	// Default 5s.
	Warmup time.Duration
	// Rate is the target operations per second over all workers; 0 runs as
	// fast as the workers can. With a rate, operations have fixed intended
	// start times and latency counts from them. Default 0.
	Rate float64
	// Pairs is the sweep of R/W combinations, run in order. Default 2/2.
	Pairs []Pair
	// N is the cluster's replica count. 0 (default): read from GET
	// /v1/cluster, 3 if that fails; a value that differs from the
	// cluster's is refused. It is only reported.
	N int
	// PlainUpdates sends updates without a context (plain PUTs: they
	// supersede what R replicas hold), instead of
	// the context of the worker's last read or write of the key. Default
	// false.
	PlainUpdates bool
	// WorkerContexts limits an update's context to the worker's own last
	// read or write of the key. Default false: the context also covers the
	// latest write of the key that any worker had acknowledged, as in an
	// application whose threads share what they learn; with many workers
	// on a few hot keys, a worker's own context is usually old, and every
	// update then leaves the writes it missed as siblings.
	WorkerContexts bool
	// Load writes every key once, with W=N, before the sweep, so that reads
	// find data. Default true.
	Load bool
	// Out is a directory for results.csv, results.json and chart.svg.
	// Default "": no files.
	Out string
	// ProbeRate is the PBS probes per second: acknowledged writes whose key
	// is then read at the combination's R at each of ProbeDelays. 0
	// disables probes. Default 20.
	ProbeRate float64
	// Timeout bounds each operation, the client's retries included.
	// Default 5s.
	Timeout time.Duration
	// Interval is the period of the progress lines. Default 1s.
	Interval time.Duration
}

// MinValueSize is the smallest document that holds the sequence number.
const MinValueSize = 64

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Endpoints:    []string{"http://127.0.0.1:8080"},
		Workload:     WorkloadA,
		Distribution: Zipfian,
		Records:      10000,
		ValueSize:    1024,
		Bucket:       "bench",
		Concurrency:  64,
		Duration:     30 * time.Second,
		Warmup:       5 * time.Second,
		Pairs:        []Pair{{2, 2}},
		Load:         true,
		ProbeRate:    20,
		Timeout:      5 * time.Second,
		Interval:     time.Second,
	}
}

// Validate rejects bad values and combinations. R and W are checked
// against N once N is known (Run).
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Endpoints) == 0 {
		bad("no endpoints")
	}
	if _, err := c.Workload.mix(); err != nil {
		bad("%v", err)
	}
	if c.Distribution != Zipfian && c.Distribution != Uniform {
		bad("distribution %q: want zipfian or uniform", c.Distribution)
	}
	if c.Records < 1 {
		bad("records %d: want at least 1", c.Records)
	}
	if c.ValueSize < MinValueSize {
		bad("value size %d: want at least %d bytes", c.ValueSize, MinValueSize)
	}
	if c.Bucket == "" {
		bad("empty bucket")
	}
	if c.Concurrency < 1 {
		bad("concurrency %d: want at least 1", c.Concurrency)
	}
	if c.Duration <= 0 {
		bad("duration %v: want more than 0", c.Duration)
	}
	if c.Warmup < 0 {
		bad("warmup %v: want 0 or more", c.Warmup)
	}
	if c.Rate < 0 {
		bad("rate %v: want 0 (unlimited) or more", c.Rate)
	}
	if len(c.Pairs) == 0 {
		bad("no R/W combination")
	}
	if c.N < 0 {
		bad("n %d: want 0 (the cluster's) or more", c.N)
	}
	if c.ProbeRate < 0 {
		bad("probe rate %v: want 0 (none) or more", c.ProbeRate)
	}
	if c.Timeout <= 0 {
		bad("timeout %v: want more than 0", c.Timeout)
	}
	if c.Interval <= 0 {
		bad("interval %v: want more than 0", c.Interval)
	}
	return errors.Join(errs...)
}

// checkQuorums rejects R or W above n.
func (c *Config) checkQuorums(n int) error {
	for _, p := range c.Pairs {
		if p.R > n || p.W > n {
			return fmt.Errorf("R/W %v: R and W must be at most N=%d", p, n)
		}
	}
	return nil
}
