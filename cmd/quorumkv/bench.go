package main

import (
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/quorumkv/quorumkv/cmd/quorumkv/internal/bench"
)

func newBenchCmd(a *app) *cobra.Command {
	cfg := bench.DefaultConfig()
	var (
		endpoints    []string
		routing      string
		workload     string
		distribution string
		rw           string
		updateCtx    string
	)
	cmd := &cobra.Command{
		Use:   "bench [--endpoints URL,...] [--workload a|b|c|f|write] [--rw 1/1,2/2] [--out DIR] ...",
		Short: "Load-test a cluster: YCSB-style workloads, latency, stale reads, PBS",
		Long: `Run a YCSB-style workload against a cluster through the Go client, once per
R/W combination of --rw, and report throughput, latency percentiles
(HdrHistogram, microsecond resolution), errors by kind, the share of stale
reads and PBS t99.9 (see docs/benchmarking.md).

Workloads: a (50% read, 50% update), b (95% read, 5% update), c (100% read),
f (50% read, 50% read-modify-write with client.Update), write (100% update).
An update carries the causal context of the worker's last read or write of
the key (a plain PUT when it has none; --update-context none: always). Documents are JSON of exactly
--value-size bytes with a sequence number.

With --load (the default) every key is first written once with W=N. Each
combination then runs --warmup (not counted) and --duration (measured),
printing one line per second per operation type, then a summary row.

A read is stale when its context does not cover the last write of its key
that was acknowledged before the read began. PBS probes read a sample of
acknowledged writes (--probe-rate per second) at R at 0, 1, 2, 5, 10, 20,
50, 100, 200 and 500 ms after the acknowledgement; t99.9 is the first delay
at which 99.9% of them saw the write (resolved only with 1000 probes).

N is read from GET /v1/cluster; when no endpoint answers it (a plain HTTP
server used as a reference), --n or 3 is assumed and reported. Against such
a server use --routing round-robin --load=false --workload c.

Ctrl-C stops the run, prints and writes what was measured, and exits 1.`,
		Example: `  quorumkv bench --rw 1/1,2/2,1/3,3/1 --duration 20s --out bench-results
  quorumkv bench --workload b --distribution uniform --rate 2000 --concurrency 128
  quorumkv bench --endpoints http://127.0.0.1:9000 --routing round-robin --load=false --workload c`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Endpoints = endpoints
			switch routing {
			case "key-aware":
			case "round-robin":
				cfg.RoundRobin = true
			default:
				return usageErrorf(cmd, "--routing %q: want key-aware or round-robin", routing)
			}
			switch updateCtx {
			case "latest":
			case "last":
				cfg.WorkerContexts = true
			case "none":
				cfg.PlainUpdates = true
			default:
				return usageErrorf(cmd, "--update-context %q: want latest, last or none", updateCtx)
			}
			cfg.Workload = bench.Workload(strings.ToLower(workload))
			cfg.Distribution = bench.Distribution(distribution)
			pairs, err := bench.ParsePairs(rw)
			if err != nil {
				return usageErrorf(cmd, "--rw %v", err)
			}
			cfg.Pairs = pairs
			if err := cfg.Validate(); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			_, err = bench.Run(ctx, cfg, a.stdout, log)
			return err
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringSliceVar(&endpoints, "endpoints", cfg.Endpoints, "nodes to send requests to, comma-separated http://host:port (key-aware routing learns the others from one)")
	fs.StringVar(&routing, "routing", "key-aware", "key-aware (each request to a replica of its key) or round-robin (over --endpoints)")
	fs.StringVar(&workload, "workload", string(cfg.Workload), "operation mix: a (50/50 read/update), b (95/5), c (read only), f (50% read, 50% read-modify-write), write (update only)")
	fs.StringVar(&distribution, "distribution", string(cfg.Distribution), "key popularity: zipfian (constant 0.99) or uniform")
	fs.StringVar(&updateCtx, "update-context", "latest", "what an update sends as X-Context: latest (this worker's last context of the key joined with the latest write of it any worker had acknowledged), last (this worker's last context only; a plain PUT without one) or none (always a plain PUT: it supersedes what R replicas hold)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of every random choice; 0 picks one (printed and in the results)")
	fs.IntVar(&cfg.Records, "records", cfg.Records, "keys in the keyspace")
	fs.IntVar(&cfg.ValueSize, "value-size", cfg.ValueSize, "size of every written JSON document, bytes (at least 64)")
	fs.StringVar(&cfg.Bucket, "bucket", cfg.Bucket, "bucket of the keys")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "workers, each with one operation in flight")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time per R/W combination")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured run before each combination")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "target ops/s over all workers, latency counted from each operation's intended start; 0 = as fast as possible")
	fs.StringVar(&rw, "rw", "2/2", "R/W combinations to sweep, comma-separated, like 1/1,2/2,1/3,3/1")
	fs.IntVar(&cfg.N, "n", 0, "the cluster's N, only reported; 0 = read it from GET /v1/cluster (3 if no endpoint answers); a different N than the cluster's is refused")
	fs.BoolVar(&cfg.Load, "load", cfg.Load, "write every key once with W=N before measuring (--load=false to skip)")
	fs.StringVar(&cfg.Out, "out", "", "directory for results.csv, results.json and chart.svg (default: none written)")
	fs.Float64Var(&cfg.ProbeRate, "probe-rate", cfg.ProbeRate, "PBS probes per second (each reads the key at 10 delays after a write); 0 = none")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "deadline of each operation, the client's retries included")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "period of the progress lines")
	return cmd
}
