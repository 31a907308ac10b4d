package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"
)

// The set workload, after Jepsen's Riak set test: clients add unique
// integers to a few keys, each holding a JSON array used as a set. A client
// reads the key (merging siblings by union), adds its integer and writes
// the union back with the read's X-Context, so concurrent adds survive as
// siblings and the next read merges them. While a nemesis partitions,
// crashes and pauses nodes, every add is recorded as acknowledged (204) or
// indeterminate (anything else). After the faults heal, a strict full-quorum
// read of each key must hold every acknowledged add (nothing lost) and
// nothing that was never attempted.

const (
	setNodes    = 5
	setClients  = 6
	setBucket   = "sets"
	nemesisTime = 25 * time.Second
)

var setKeys = []string{"k0", "k1", "k2", "k3"}

// Fault kinds, in the order the nemesis cycles through them.
const (
	faultIsolate = "isolate one node"
	faultKill    = "kill -9, restart"
	faultPause   = "pause (SIGSTOP)"
	faultHalves  = "partition 2 | 3"
	noFault      = "no fault (healthy, recovering)"
)

var faultKinds = []string{faultIsolate, faultKill, faultPause, faultHalves}

// add is one attempted add: a read, then (if the read answered) a write.
type add struct {
	client  int
	node    string // the node the client sent the read and the write to
	key     string
	value   int64 // 0 if the read failed and nothing was written
	at      time.Duration
	readErr string // why the read failed ("" if it answered)
	acked   bool
	refused string // a 4xx answer to the write: nothing was stored
	outcome string // the write's answer, for indeterminate ones
	// noCtx: the read answered without X-Context (a bug: every read,
	// a 404 included, carries one).
	noCtx bool
}

// faultWindow is one fault, from its start until its recovery began.
type faultWindow struct {
	kind, desc string
	start, end time.Duration
}

// targets are the nodes clients send to: running and not paused (what a
// load balancer's health check would leave in).
type targets struct {
	mu    sync.Mutex
	nodes []*node
}

func (t *targets) pick(r *rand.Rand) *node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nodes[r.IntN(len(t.nodes))]
}

func (t *targets) remove(n *node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nodes = slices.DeleteFunc(t.nodes, func(x *node) bool { return x == n })
}

func (t *targets) add(n *node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.nodes, n) {
		t.nodes = append(t.nodes, n)
	}
}

// parseSet reads a GET answer as a set: 200 is one array, 300 the union of
// the siblings' arrays, 404 the empty set. ok is false for any other
// status; err reports a body that is not what the workload wrote.
func parseSet(r reply) (set map[int64]bool, ok bool, err error) {
	set = map[int64]bool{}
	addArray := func(b []byte) error {
		var vs []int64
		if err := json.Unmarshal(b, &vs); err != nil {
			return fmt.Errorf("value %.200q is not an array of integers: %v", b, err)
		}
		for _, v := range vs {
			set[v] = true
		}
		return nil
	}
	switch r.status {
	case http.StatusOK:
		return set, true, addArray(r.body)
	case http.StatusMultipleChoices:
		var body struct {
			Siblings []struct {
				Value    json.RawMessage `json:"value"`
				Encoding string          `json:"encoding"`
			} `json:"siblings"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			return nil, true, fmt.Errorf("300 body: %v: %s", err, r)
		}
		if len(body.Siblings) < 2 {
			return nil, true, fmt.Errorf("300 with %d siblings: %s", len(body.Siblings), r)
		}
		for _, s := range body.Siblings {
			v := []byte(s.Value)
			switch s.Encoding {
			case "json":
			case "base64":
				var str string
				if err := json.Unmarshal(s.Value, &str); err != nil {
					return nil, true, fmt.Errorf("base64 sibling: %v", err)
				}
				if v, err = base64.StdEncoding.DecodeString(str); err != nil {
					return nil, true, fmt.Errorf("base64 sibling: %v", err)
				}
			default:
				return nil, true, fmt.Errorf("sibling encoding %q: %s", s.Encoding, r)
			}
			if err := addArray(v); err != nil {
				return nil, true, err
			}
		}
		return set, true, nil
	case http.StatusNotFound:
		return set, true, nil
	}
	return nil, false, nil
}

// describe names a failed call: its status and error code, or the kind of
// transport error.
func describe(r reply, err error) string {
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return "client timeout"
		case strings.Contains(err.Error(), "connection refused"):
			return "connection refused"
		case strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "EOF"):
			return "connection lost"
		}
		return "error: " + err.Error()
	}
	var body struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.body, &body)
	return strings.TrimSpace(fmt.Sprintf("%d %s", r.status, body.Error))
}

// setClient runs one client until stop is closed and returns its adds.
func setClient(t *testing.T, c *cluster, id int, seed uint64, tg *targets, begin time.Time, stop <-chan struct{}) []add {
	r := rand.New(rand.NewPCG(seed, uint64(id)))
	var out []add
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return out
		default:
		}
		n := tg.pick(r)
		a := add{client: id, node: n.id, key: setKeys[r.IntN(len(setKeys))], at: time.Since(begin)}
		url := n.url("/v1/kv/" + setBucket + "/" + a.key + "?timeout=2s")
		rd, err := do(c.client, 5*time.Second, http.MethodGet, url, nil)
		var set map[int64]bool
		ok := false
		if err == nil {
			var perr error
			set, ok, perr = parseSet(rd)
			if perr != nil {
				t.Errorf("client %d: GET %s on %s: %v", id, a.key, n.id, perr)
				ok = false
			}
		}
		if !ok {
			a.readErr = describe(rd, err)
			out = append(out, a)
			time.Sleep(20 * time.Millisecond) // do not spin on a refused connection
			continue
		}
		a.value = int64(id)*1_000_000 + int64(seq)
		set[a.value] = true
		vals := make([]int64, 0, len(set))
		for v := range set {
			vals = append(vals, v)
		}
		slices.Sort(vals)
		body, _ := json.Marshal(vals)
		hdr := []string{"Content-Type", "application/json"}
		// Every successful read, a 404 included, carries an X-Context
		// (for an absent key, the empty one): writing back with it
		// supersedes exactly what the read saw.
		ctx := rd.header.Get("X-Context")
		a.noCtx = ctx == ""
		if a.noCtx {
			t.Errorf("client %d: GET %s on %s answered %d without X-Context", id, a.key, n.id, rd.status)
		}
		if ctx != "" {
			hdr = append(hdr, "X-Context", ctx)
		}
		wr, err := do(c.client, 5*time.Second, http.MethodPut, url, body, hdr...)
		switch {
		case err == nil && wr.status == http.StatusNoContent:
			a.acked = true
		case err == nil && wr.status >= 400 && wr.status < 500:
			a.refused = describe(wr, nil)
			t.Errorf("client %d: PUT %s on %s refused: %s", id, a.key, n.id, wr)
		default:
			a.outcome = describe(wr, err)
		}
		out = append(out, a)
	}
}

// TestSetWorkloadUnderNemesis is the Riak set test of Jepsen on five real
// processes (N=3, R=W=2): lost must be 0 and unexpected must be 0. It logs
// the outcome per key and the write availability per fault type.
func TestSetWorkloadUnderNemesis(t *testing.T) {
	seed := testSeed(t)
	c := newCluster(t, setNodes, "--n", "3", "--r", "2", "--w", "2")
	c.startAll()
	nem := rand.New(rand.NewPCG(seed, 0))

	tg := &targets{nodes: slices.Clone(c.nodes)}
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		results = make([][]add, setClients)
		stopped atomic.Bool
	)
	stopClients := func() {
		if stopped.CompareAndSwap(false, true) {
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(stopClients) // runs before the cluster's cleanup kills the nodes
	begin := time.Now()
	for i := range setClients {
		wg.Go(func() { results[i] = setClient(t, c, i+1, seed, tg, begin, stop) })
	}

	// The nemesis. Fault and recovery spans are fixed durations of the
	// schedule; waits for state (restart, heal) poll.
	var windows []faultWindow
	time.Sleep(time.Second) // a healthy baseline first
	for i := 0; time.Since(begin) < nemesisTime; i++ {
		kind := faultKinds[i%len(faultKinds)]
		hold := 3*time.Second + time.Duration(nem.Int64N(int64(2*time.Second)))
		w := faultWindow{kind: kind, start: time.Since(begin)}
		victim := c.nodes[nem.IntN(len(c.nodes))]
		switch kind {
		case faultIsolate:
			var others []*node
			for _, n := range c.nodes {
				if n != victim {
					others = append(others, n)
				}
			}
			w.desc = fmt.Sprintf("%s cut off from the other 4", victim.id)
			if err := c.partition([]*node{victim}, others); err != nil {
				c.fatalf("%v", err)
			}
		case faultKill:
			w.desc = fmt.Sprintf("%s killed, then restarted", victim.id)
			tg.remove(victim)
			c.kill(victim)
		case faultPause:
			w.desc = fmt.Sprintf("%s paused, then continued", victim.id)
			tg.remove(victim)
			c.pause(victim)
		case faultHalves:
			perm := nem.Perm(len(c.nodes))
			var a, b []*node
			for j, p := range perm {
				if j < 2 {
					a = append(a, c.nodes[p])
				} else {
					b = append(b, c.nodes[p])
				}
			}
			w.desc = fmt.Sprintf("%s | %s", ids(a), ids(b))
			if err := c.partition(a, b); err != nil {
				c.fatalf("%v", err)
			}
		}
		t.Logf("%6.1fs fault %d: %s: %s, for %v", w.start.Seconds(), i+1, kind, w.desc, hold.Round(time.Millisecond))
		time.Sleep(hold)
		w.end = time.Since(begin)
		windows = append(windows, w)
		switch kind {
		case faultIsolate, faultHalves:
			if err := c.heal(); err != nil {
				c.fatalf("heal: %v", err)
			}
		case faultKill:
			c.restart(victim)
			tg.add(victim)
		case faultPause:
			c.resume(victim)
			tg.add(victim)
		}
		t.Logf("%6.1fs recovered (%s)", time.Since(begin).Seconds(), kind)
		time.Sleep(2 * time.Second)
	}
	stopClients()
	end := time.Since(begin)
	t.Logf("%6.1fs clients stopped", end.Seconds())

	// Heal everything, make sure every node runs, and let the cluster
	// settle: hints delivered, no transfer pending.
	for _, n := range c.nodes {
		n.mu.Lock()
		paused := n.paused
		n.mu.Unlock()
		switch {
		case !n.running():
			c.restart(n)
		case paused:
			c.resume(n)
		}
	}
	if err := c.heal(); err != nil {
		c.fatalf("heal: %v", err)
	}
	c.waitSettled(60 * time.Second)

	var all []add
	for _, r := range results {
		all = append(all, r...)
	}
	checkSets(t, c, seed, all, windows)
	logAvailability(t, all, windows, end)
}

func ids(ns []*node) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = n.id
	}
	return strings.Join(s, ",")
}

// finalRead reads key at R=3 with a strict quorum, retrying until it
// answers or 30 s passed.
func finalRead(c *cluster, r *rand.Rand, key string) map[int64]bool {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := c.nodes[r.IntN(len(c.nodes))]
		rd, err := do(c.client, 10*time.Second, http.MethodGet, n.url("/v1/kv/"+setBucket+"/"+key+"?r=3&sloppy=false&timeout=5s"), nil)
		if err == nil {
			set, ok, perr := parseSet(rd)
			if perr != nil {
				c.fatalf("final read of %s on %s: %v", key, n.id, perr)
			}
			if ok {
				return set
			}
		}
		if time.Now().After(deadline) {
			c.fatalf("final read of %s: no answer within 30s; last %s on %s", key, describe(rd, err), n.id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSets compares the final sets with what clients attempted.
func checkSets(t *testing.T, c *cluster, seed uint64, all []add, windows []faultWindow) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	var totAtt, totAck, totInd, totLost, totUnexp, totRec, totPresent, after404 int
	for _, a := range all {
		if a.value != 0 && a.noCtx {
			after404++
		}
	}
	tw := new(strings.Builder)
	w := tabwriter.NewWriter(tw, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "key\tattempted\tacked\tindeterminate\tpresent\tlost\tunexpected\trecovered\t")
	for _, key := range setKeys {
		attempted, acked := map[int64]bool{}, map[int64]bool{}
		refused := map[int64]string{}
		for _, a := range all {
			if a.key != key || a.value == 0 {
				continue
			}
			attempted[a.value] = true
			if a.acked {
				acked[a.value] = true
			}
			if a.refused != "" {
				refused[a.value] = a.refused
			}
		}
		present := finalRead(c, r, key)
		var lost, unexpected, recovered, refusedPresent []int64
		for v := range acked {
			if !present[v] {
				lost = append(lost, v)
			}
		}
		for v := range present {
			switch {
			case !attempted[v]:
				unexpected = append(unexpected, v)
			case refused[v] != "":
				refusedPresent = append(refusedPresent, v)
			case !acked[v]:
				recovered = append(recovered, v)
			}
		}
		ind := len(attempted) - len(acked)
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", key, len(attempted), len(acked), ind, len(present),
			len(lost), len(unexpected), len(recovered))
		totAtt += len(attempted)
		totAck += len(acked)
		totInd += ind
		totLost += len(lost)
		totUnexp += len(unexpected)
		totRec += len(recovered)
		totPresent += len(present)
		slices.Sort(lost)
		slices.Sort(unexpected)
		if len(lost) > 0 {
			t.Errorf("key %s: %d acknowledged adds lost, first %v", key, len(lost), lost[:min(10, len(lost))])
			for _, v := range lost[:min(10, len(lost))] {
				for _, a := range all {
					if a.value == v {
						t.Logf("    lost %d: added at %.2fs by client %d through %s (%s), read was a 404 without X-Context: %v",
							v, a.at.Seconds(), a.client, a.node, faultAt(windows, a.at), a.noCtx)
					}
				}
			}
		}
		if len(unexpected) > 0 {
			t.Errorf("key %s: %d values present that no client attempted, first %v", key, len(unexpected), unexpected[:min(10, len(unexpected))])
		}
		if len(refusedPresent) > 0 {
			t.Errorf("key %s: %d values present whose write was refused with a 4xx: %v", key, len(refusedPresent), refusedPresent[:min(10, len(refusedPresent))])
		}
	}
	fmt.Fprintf(w, "total\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", totAtt, totAck, totInd, totPresent, totLost, totUnexp, totRec)
	w.Flush()
	how := fmt.Sprintf("%d reads answered without X-Context", after404)
	t.Logf("final read of each key at r=3&sloppy=false after healing (seed %d):\n%s"+
		"(indeterminate = not acknowledged: 503, timeout or connection error; recovered = indeterminate but present; %s)",
		seed, tw, how)
	if os.Getenv("QUORUMKV_E2E_VERBOSE") != "" {
		for _, a := range all {
			t.Logf("%+v", a)
		}
	}
}

// logAvailability logs the write availability per fault type: the share
// of attempted adds acknowledged among those started during a fault of
// that type (and outside any fault), plus one line per fault window.
func logAvailability(t *testing.T, all []add, windows []faultWindow, end time.Duration) {
	t.Helper()
	kindOf := func(at time.Duration) (string, int) {
		for i, w := range windows {
			if at >= w.start && at < w.end {
				return w.kind, i
			}
		}
		return noFault, -1
	}
	type stats struct {
		windows          int
		span             time.Duration
		reads, readFails int
		writes, acked    int
		failures         map[string]int
	}
	by := map[string]*stats{}
	get := func(k string) *stats {
		if by[k] == nil {
			by[k] = &stats{failures: map[string]int{}}
		}
		return by[k]
	}
	faulty := time.Duration(0)
	for _, w := range windows {
		s := get(w.kind)
		s.windows++
		s.span += w.end - w.start
		faulty += w.end - w.start
	}
	get(noFault).span = end - faulty
	winWrites, winAcked, winReads := make([]int, len(windows)), make([]int, len(windows)), make([]int, len(windows))
	for _, a := range all {
		k, wi := kindOf(a.at)
		s := get(k)
		s.reads++
		if wi >= 0 {
			winReads[wi]++
		}
		if a.readErr != "" {
			s.readFails++
			s.failures["read "+a.readErr]++
			continue
		}
		s.writes++
		if wi >= 0 {
			winWrites[wi]++
		}
		if a.acked {
			s.acked++
			if wi >= 0 {
				winAcked[wi]++
			}
		} else {
			s.failures["write "+a.outcome+a.refused]++
		}
	}
	pct := func(a, b int) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
	}
	sb := new(strings.Builder)
	w := tabwriter.NewWriter(sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "fault\twindows\ttime\tadds tried\treads ok\twrites\tacked\twrite avail.\tadd avail.\tnot acknowledged (by answer)")
	for _, k := range append(slices.Clone(faultKinds), noFault) {
		s := by[k]
		if s == nil {
			continue
		}
		var fails []string
		for f, n := range s.failures {
			fails = append(fails, fmt.Sprintf("%s: %d", f, n))
		}
		slices.Sort(fails)
		fmt.Fprintf(w, "%s\t%d\t%.1fs\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", k, s.windows, s.span.Seconds(), s.reads, s.reads-s.readFails,
			s.writes, s.acked, pct(s.acked, s.writes), pct(s.acked, s.reads), strings.Join(fails, ", "))
	}
	w.Flush()
	t.Logf("write availability per fault type (write avail. = acked / writes attempted; add avail. = acked / adds tried, a failed read aborts an add):\n%s", sb)
	sb.Reset()
	w = tabwriter.NewWriter(sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "#\tfrom\tto\tfault\tadds tried\twrites\tacked\twrite avail.")
	for i, win := range windows {
		fmt.Fprintf(w, "%d\t%.1fs\t%.1fs\t%s: %s\t%d\t%d\t%d\t%s\n", i+1, win.start.Seconds(), win.end.Seconds(), win.kind, win.desc,
			winReads[i], winWrites[i], winAcked[i], pct(winAcked[i], winWrites[i]))
	}
	w.Flush()
	t.Logf("fault windows:\n%s", sb)
}

// faultAt names the fault window at time at, if any.
func faultAt(windows []faultWindow, at time.Duration) string {
	for _, w := range windows {
		if at >= w.start && at < w.end {
			return w.kind + ": " + w.desc
		}
	}
	return "no fault"
}
