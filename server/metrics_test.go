package server

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestOpMetricsCountEveryStatus checks the per-status cache: repeated
// statuses count on the same series, and a code outside 0..599 is still
// counted.
func TestOpMetricsCountEveryStatus(t *testing.T) {
	m := newMetrics()
	get := m.forOp("get")
	for _, status := range []int{200, 200, 404, 200, 799} {
		get.observe(status, time.Millisecond)
	}
	m.forOp("put").observe(204, time.Millisecond)
	for _, c := range []struct {
		op, status string
		want       float64
	}{{"get", "200", 3}, {"get", "404", 1}, {"get", "799", 1}, {"put", "204", 1}, {"put", "200", 0}} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(c.op, c.status)); got != c.want {
			t.Errorf("requests{op=%s,status=%s} = %v, want %v", c.op, c.status, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.latency); n != 4 {
		t.Errorf("%d latency series, want 4", n)
	}
}
