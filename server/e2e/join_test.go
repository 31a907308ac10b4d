package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMismatchedNodeRefusedToJoin starts a one-node cluster with the
// default 1024 partitions and a second node with --partitions 512 that
// joins it. N and the partition count are fixed at cluster creation: the
// join must fail with an error that names both parameter sets, and the
// cluster must never list the node.
func TestMismatchedNodeRefusedToJoin(t *testing.T) {
	c := newCluster(t, 1, "--n", "3")
	c.startAll()
	n1 := c.nodes[0]
	n2 := c.addNode("n2", "--n", "3", "--partitions", "512")
	c.startReady(n2)

	// The joiner keeps retrying (or exits); either way its log must name
	// both parameter sets in one line.
	const mine, theirs = "partitions=512", "partitions=1024"
	deadline := time.Now().Add(20 * time.Second)
	var line string
	for line == "" {
		line = findLine(n2.logPath, mine, theirs)
		if line != "" {
			break
		}
		if !n2.running() {
			n2.mu.Lock()
			err := n2.exitErr
			n2.mu.Unlock()
			c.fatalf("n2 exited (%v) without an error naming %q and %q; its log:\n%s", err, mine, theirs, tail(n2.logPath, 30))
		}
		if time.Now().After(deadline) {
			c.fatalf("after 20s, n2's log has no line naming both %q and %q; its log:\n%s", mine, theirs, tail(n2.logPath, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("n2 reports: %s", line)
	if !n2.running() {
		n2.mu.Lock()
		err := n2.exitErr
		n2.mu.Unlock()
		if err == nil {
			t.Errorf("n2 exited with status 0 after a refused join")
		}
		t.Logf("n2 exited: %v", err)
	} else {
		t.Logf("n2 keeps running and retrying the join")
	}

	// n1 must not list n2, neither in its ring view nor in its status,
	// over several gossip rounds (push-pull runs every 500ms).
	for i := range 6 {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		r, err := do(c.client, 5*time.Second, http.MethodGet, n1.url("/v1/cluster"), nil)
		if err != nil || r.status != http.StatusOK {
			c.fatalf("GET /v1/cluster on n1: %v %v", r, err)
		}
		var view struct {
			Members   []string          `json:"members"`
			Addresses map[string]string `json:"addresses"`
			States    map[string]string `json:"states"`
		}
		if err := json.Unmarshal(r.body, &view); err != nil {
			c.fatalf("GET /v1/cluster on n1: %v: %s", err, r)
		}
		if !slices.Equal(view.Members, []string{"n1"}) || view.Addresses["n2"] != "" || view.States["n2"] != "" {
			c.fatalf("n1's /v1/cluster lists the refused node: members %v, addresses %v, states %v", view.Members, view.Addresses, view.States)
		}
		st, err := c.status(n1)
		if err != nil {
			c.fatalf("%v", err)
		}
		for _, m := range st.Members {
			if m.Node != "n1" {
				c.fatalf("n1's /v1/admin/status lists %s (%s): %s", m.Node, m.State, r)
			}
		}
	}
	t.Logf("n1 lists only itself in /v1/cluster and /v1/admin/status")
}

// findLine returns the first line of the file at path that contains every
// one of subs, or "".
func findLine(path string, subs ...string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		ok := true
		for _, s := range subs {
			if !strings.Contains(l, s) {
				ok = false
				break
			}
		}
		if ok {
			return fmt.Sprintf("%.500s", l)
		}
	}
	return ""
}
