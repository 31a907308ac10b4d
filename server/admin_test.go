package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// adminNodeStatus is GET /v1/admin/node on id.
func (c *testCluster) adminNodeStatus(id string) (NodeStatus, string) {
	c.t.Helper()
	r := c.must(http.StatusOK, c.do(id, http.MethodGet, "/v1/admin/node", ""))
	var st NodeStatus
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		c.t.Fatalf("GET /v1/admin/node on %s: %v: %s", id, err, r.body)
	}
	return st, r.body
}

// adminClusterStatus is GET /v1/admin/status on id.
func (c *testCluster) adminClusterStatus(id string) (ClusterStatus, string) {
	c.t.Helper()
	r := c.must(http.StatusOK, c.do(id, http.MethodGet, "/v1/admin/status", ""))
	var st ClusterStatus
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		c.t.Fatalf("GET /v1/admin/status on %s: %v: %s", id, err, r.body)
	}
	return st, r.body
}

// TestAdminStatusReportsAntiEntropy: each node reports its last scheduled
// anti-entropy round and totals, and the cluster status carries every live
// member's last round.
func TestAdminStatusReportsAntiEntropy(t *testing.T) {
	c := newTestCluster(t, 3, nil) // FastTiming: a round every 200ms or so
	start := time.Now()
	for _, id := range c.ids {
		eventually(t, id+" to complete an anti-entropy round", func() bool {
			st, _ := c.adminNodeStatus(id)
			return st.AntiEntropy.LastRound != nil
		})
		st, body := c.adminNodeStatus(id)
		ae := st.AntiEntropy
		if ae.Rounds == 0 || ae.Exchanges == 0 || ae.BytesSent == 0 || ae.LastRound.Before(start.Add(-time.Minute)) || ae.LastRound.After(time.Now()) {
			t.Errorf("%s: anti-entropy status %+v (last round %v)", id, ae, ae.LastRound)
		}
		if !containsAll(body, `"anti_entropy":{"last_round":"`, `"rounds":`, `"exchanges":`, `"leaves_fixed":`, `"purged":`) {
			t.Errorf("%s: node status JSON %s", id, body)
		}
	}
	st, body := c.adminClusterStatus("n2")
	if st.Partitions != 64 || len(st.Members) != 3 {
		t.Fatalf("cluster status %s", body)
	}
	for _, m := range st.Members {
		if m.LastRound == nil || m.LastRound.Before(start.Add(-time.Minute)) || m.Error != "" {
			t.Errorf("member %s: last round %v, error %q", m.Node, m.LastRound, m.Error)
		}
	}
	if strings.Count(body, `"last_repair_round":"`) != 3 {
		t.Errorf("cluster status JSON %s", body)
	}

	// A down member is not asked: no last round for it.
	c.stop("n3")
	c.waitDown("n3")
	st, _ = c.adminClusterStatus("n1")
	for _, m := range st.Members {
		if (m.Node == "n3") != (m.LastRound == nil) {
			t.Errorf("with n3 down, member %s: alive %v, last round %v", m.Node, m.Alive, m.LastRound)
		}
	}
}

// TestAdminStatusWithoutRounds: with scheduled anti-entropy paused no round
// completes, and a repair through the admin API does not count as one,
// though its exchanges show in the totals.
func TestAdminStatusWithoutRounds(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.PauseAntiEntropy = true })
	st, body := c.adminNodeStatus("n1")
	if st.AntiEntropy.LastRound != nil || st.AntiEntropy.Rounds != 0 || !strings.Contains(body, `"anti_entropy":{"last_round":null,`) {
		t.Errorf("node status before any round: %s", body)
	}
	c.must(http.StatusOK, c.do("n1", http.MethodPost, "/v1/admin/repair?partition=3", ""))
	st, body = c.adminNodeStatus("n1")
	if st.AntiEntropy.LastRound != nil || st.AntiEntropy.Rounds != 0 || st.AntiEntropy.Exchanges != 2 {
		t.Errorf("node status after a repair of one partition: %s", body)
	}
	cs, body := c.adminClusterStatus("n1")
	for _, m := range cs.Members {
		if m.LastRound != nil || m.PendingHints == nil {
			t.Errorf("member %s: last round %v, pending hints %v", m.Node, m.LastRound, m.PendingHints)
		}
	}
	if strings.Contains(body, "last_repair_round") {
		t.Errorf("cluster status without rounds: %s", body)
	}
}
