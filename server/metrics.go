package server

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one node's Prometheus metrics, in a registry of its own so
// that several nodes can live in one process (dev mode, tests).
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec   // op, status
	latency        *prometheus.HistogramVec // op, status
	quorumFailures *prometheus.CounterVec   // op
	readRepairs    prometheus.Counter
	plainRewrites  prometheus.Counter
	siblings       prometheus.Histogram
	replicaCalls   *prometheus.CounterVec // op, result
	forwarded      prometheus.Counter
	coordinated    *prometheus.CounterVec // op, replica
	retries        prometheus.Counter
	hints          *prometheus.CounterVec // event: stored, refused, delivered, slow, forwarded
	pendingHints   *prometheus.GaugeVec   // kind: durable, slow
	transfers      prometheus.Gauge
	transfersDone  prometheus.Counter
	transferBytes  prometheus.Counter
	memberChanges  prometheus.Counter

	// Children of the vectors above that the request path counts on,
	// resolved once (see opMetrics).
	calls struct{ get, apply, put, hint callCounters }     // replicaCalls
	coord struct{ get, put, delete [2]prometheus.Counter } // coordinated, by replica false, true
}

// callCounters counts the calls of one operation to replicas by result.
type callCounters struct{ ok, failed prometheus.Counter }

func (c callCounters) count(err error) {
	if err != nil {
		c.failed.Inc()
	} else {
		c.ok.Inc()
	}
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quorumkv_requests_total",
			Help: "Client requests by operation and HTTP status.",
		}, []string{"op", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "quorumkv_request_duration_seconds",
			Help:    "Client request latency by operation and HTTP status.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18), // 100µs .. 13s
		}, []string{"op", "status"}),
		quorumFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quorumkv_quorum_failures_total",
			Help: "Requests answered 503 because R or W replicas did not answer in time.",
		}, []string{"op"}),
		readRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_read_repairs_total",
			Help: "Replicas sent the merged object after a read found them stale or missing it.",
		}),
		plainRewrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_plain_write_reissues_total",
			Help: "Plain writes issued a second time because another replica held a version the coordinator's did not.",
		}),
		siblings: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "quorumkv_read_siblings",
			Help:    "Live siblings per successful read.",
			Buckets: []float64{1, 2, 3, 5, 10, 25, 50, 100},
		}),
		replicaCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quorumkv_replica_calls_total",
			Help: "Calls from this coordinator to replicas (itself included), by operation and result.",
		}, []string{"op", "result"}),
		coordinated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quorumkv_requests_coordinated_total",
			Help: "Client requests this node received, by operation and by whether it was a counting replica of the key (a key-aware client sends every request to one).",
		}, []string{"op", "replica"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_write_retries_total",
			Help: "Writes whose X-Request-Id this coordinator already held: retries, answered with the stored version instead of a new one.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_forwarded_writes_total",
			Help: "Writes this node forwarded to a replica of the key because it is not one.",
		}),
		hints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quorumkv_hints_total",
			Help: "Hint events on this node: stored (accepted as a fallback), refused (store full), delivered, slow (kept for a replica slower than W), forwarded (a late write for a partition this node no longer holds).",
		}, []string{"event"}),
		pendingHints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "quorumkv_hints_pending",
			Help: "Hints this node holds, by kind (durable: counted toward W, never dropped; slow: best effort).",
		}, []string{"kind"}),
		transfers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "quorumkv_transfers_pending",
			Help: "Partitions this node must still receive after a ring change.",
		}),
		transfersDone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_transfers_completed_total",
			Help: "Partitions received completely.",
		}),
		transferBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_transfer_bytes_total",
			Help: "Approximate bytes received by partition transfers.",
		}),
		memberChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quorumkv_membership_changes_total",
			Help: "Changes to this node's view of the ring membership (local or gossiped).",
		}),
	}
	calls := func(op string) callCounters {
		return callCounters{m.replicaCalls.WithLabelValues(op, "ok"), m.replicaCalls.WithLabelValues(op, "error")}
	}
	m.calls.get, m.calls.apply, m.calls.put, m.calls.hint = calls("get"), calls("apply"), calls("put"), calls("hint")
	coord := func(op string) [2]prometheus.Counter {
		return [2]prometheus.Counter{m.coordinated.WithLabelValues(op, "false"), m.coordinated.WithLabelValues(op, "true")}
	}
	m.coord.get, m.coord.put, m.coord.delete = coord("get"), coord("put"), coord("delete")
	m.reg.MustRegister(m.hints, m.pendingHints, m.transfers, m.transfersDone, m.transferBytes, m.memberChanges)
	m.reg.MustRegister(m.requests, m.latency, m.quorumFailures, m.readRepairs, m.plainRewrites, m.siblings, m.replicaCalls, m.forwarded, m.coordinated, m.retries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// opMetrics holds one client operation's request counter and latency
// histogram per HTTP status, each looked up once: WithLabelValues hashes
// and compares its labels under a lock, on every request otherwise.
type opMetrics struct {
	m        *metrics
	op       string
	byStatus [600]atomic.Pointer[statusMetrics] // by HTTP status code
}

type statusMetrics struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

func (m *metrics) forOp(op string) *opMetrics { return &opMetrics{m: m, op: op} }

// observe counts a request that was answered with status after d.
func (o *opMetrics) observe(status int, d time.Duration) {
	var s *statusMetrics
	if status >= 0 && status < len(o.byStatus) {
		s = o.byStatus[status].Load()
	}
	if s == nil {
		code := strconv.Itoa(status)
		s = &statusMetrics{
			requests: o.m.requests.WithLabelValues(o.op, code),
			latency:  o.m.latency.WithLabelValues(o.op, code),
		}
		if status >= 0 && status < len(o.byStatus) {
			o.byStatus[status].Store(s) // a racing store holds the same children
		}
	}
	s.requests.Inc()
	s.latency.Observe(d.Seconds())
}
