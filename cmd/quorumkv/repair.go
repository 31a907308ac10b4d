package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/server"
)

// defaultRepairTimeout bounds each repair call to a node: it returns only
// once the node's exchanges are done, which on a large, diverged node takes
// a while (exchanges and bytes are rate-limited).
const defaultRepairTimeout = 30 * time.Minute

func newRepairCmd(a *app) *cobra.Command {
	var (
		addr    string
		parts   []string
		rebuild bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "repair [--partition P ...] [--rebuild] [--addr HOST:PORT] [--timeout 30m]",
		Short: "Run anti-entropy on every live node now",
		Long: `Run anti-entropy now on every live member, in parallel (POST
/v1/admin/repair on each), and wait for it. Each node compares every
partition it keeps (or those given with --partition) with every live peer
replica and exchanges the keys that differ, both ways. The node at --addr
only names the members and their addresses.

With --rebuild each node first recomputes the hash trees of those partitions
from its data, which finds changes that bypassed the write path (a restored
file, a disk that flipped bits): quorumkv_antientropy_leaves_fixed_total.

One row per node: partitions compared (EXCHANGES), of which DIFFERING, the
differing tree leaves and keys, the keys changed on the node (PULLED) and at
its peers (PUSHED), failed exchanges (ERRORS), and how long it took. With
--partition, a node that is not a replica of a partition says so, which is
fine as long as some node ran it. Down members are skipped (their peers skip
them too): repair again once they are back.

The exit status is 1 if any node failed, or if no node ran a partition
asked for. --timeout bounds each call to a node.`,
		Example: `  quorumkv repair --addr 10.0.0.1:8080
  quorumkv repair --partition 17 --partition 230 --rebuild`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return usageErrorf(cmd, "--timeout %v: must be greater than 0", timeout)
			}
			ps, err := parsePartitions(parts)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			c := &adminClient{addr: &addr, http: &http.Client{Timeout: a.adminTimeout}}
			if err := c.check(cmd); err != nil {
				return err
			}
			body, err := c.do(cmd.Context(), http.MethodGet, "/v1/admin/status")
			if err != nil {
				return err
			}
			var st server.ClusterStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("%s answered an unreadable status: %v", c.host(), err)
			}
			for _, p := range ps {
				if st.Partitions > 0 && int(p) >= st.Partitions {
					return usageErrorf(cmd, "--partition %d: the cluster has %d partitions, 0 to %d", p, st.Partitions, st.Partitions-1)
				}
			}
			reps := repairAll(cmd.Context(), st.Members, ps, rebuild, &http.Client{Timeout: timeout})
			return reportRepairs(a.stdout, reps, ps)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringSliceVar(&parts, "partition", nil, "repair only this partition (repeatable, or comma-separated); default every partition")
	fs.BoolVar(&rebuild, "rebuild", false, "first recompute each partition's hash tree from its data")
	fs.StringVar(&addr, "addr", defaultAdminAddr, "HTTP address (host:port) of the node to ask for the members")
	fs.DurationVar(&timeout, "timeout", defaultRepairTimeout, "deadline of each node's repair call")
	return cmd
}

// parsePartitions parses the --partition values: partition numbers, each
// kept once, in the order given.
func parsePartitions(values []string) ([]uint32, error) {
	var out []uint32
	for _, v := range values {
		p, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--partition %q: want a partition number (0 or more)", v)
		}
		if !slices.Contains(out, uint32(p)) {
			out = append(out, uint32(p))
		}
	}
	return out, nil
}

// nodeRepair is what one member's repair did.
type nodeRepair struct {
	node    string
	down    bool // not asked: the failure detector sees it down
	asked   bool // sent at least one request
	res     antientropy.Result
	ok      int      // calls it answered with a result
	ran     []uint32 // partitions it ran (with --partition)
	refused []uint32 // partitions it is not a replica of
	err     error
	took    time.Duration
}

// repairAll runs the repair on every live member in parallel. Removed
// members are left out; down ones are listed, not asked.
func repairAll(ctx context.Context, members []server.MemberStatus, parts []uint32, rebuild bool, client *http.Client) []*nodeRepair {
	defer client.CloseIdleConnections()
	var out []*nodeRepair
	var wg sync.WaitGroup
	for _, m := range members {
		if m.State == ring.StateRemoved.String() {
			continue
		}
		r := &nodeRepair{node: m.Node, down: !m.Alive}
		out = append(out, r)
		if r.down {
			continue
		}
		c := &adminClient{base: "http://" + m.Address, http: client}
		wg.Go(func() { r.run(ctx, c, parts, rebuild) })
	}
	wg.Wait()
	return out
}

// run repairs one node: every partition it keeps in one call, or each of
// parts in a call of its own (a call for several partitions is refused
// whole if the node is not a replica of one of them). It stops at the
// first failure.
func (r *nodeRepair) run(ctx context.Context, c *adminClient, parts []uint32, rebuild bool) {
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	calls := [][]uint32{nil}
	if len(parts) > 0 {
		calls = calls[:0]
		for _, p := range parts {
			calls = append(calls, []uint32{p})
		}
	}
	for _, ps := range calls {
		q := url.Values{}
		for _, p := range ps {
			q.Add("partition", strconv.FormatUint(uint64(p), 10))
		}
		if rebuild {
			q.Set("rebuild", "true")
		}
		path := "/v1/admin/repair"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		r.asked = true
		status, body, err := c.send(ctx, http.MethodPost, path)
		if err != nil {
			r.err = err
			return
		}
		var res server.RepairResult
		readable := json.Unmarshal(body, &res) == nil && res.Node != ""
		if readable {
			r.res.Add(res.Result)
		}
		switch {
		case status == http.StatusOK && readable:
			r.ok++
			r.ran = append(r.ran, ps...)
		case status == http.StatusConflict && readable:
			r.refused = append(r.refused, ps...)
		case readable && res.Error != "":
			r.err = fmt.Errorf("%s answered %d: %s", c.host(), status, res.Error)
			return
		case status/100 == 2:
			r.err = fmt.Errorf("%s answered an unreadable repair result: %q", c.host(), clip(body))
			return
		default:
			r.err = c.answerError(status, body)
			return
		}
	}
}

// reportRepairs prints one row per node, then notes, and returns an error
// if a node failed or no node ran one of parts.
func reportRepairs(w io.Writer, reps []*nodeRepair, parts []uint32) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tEXCHANGES\tDIFFERING\tLEAVES\tKEYS\tPULLED\tPUSHED\tERRORS\tTOOK\tRESULT")
	var failed, notes []string
	ran := map[uint32]bool{}
	live := 0
	for _, r := range reps {
		for _, p := range r.ran {
			ran[p] = true
		}
		nums := strings.Repeat("-\t", 7)
		if r.ok > 0 || r.res != (antientropy.Result{}) {
			x := r.res
			nums = fmt.Sprintf("%d\t%d\t%d\t%d\t%d\t%d\t%d\t", x.Exchanges, x.Differing, x.Leaves, x.Keys, x.Pulled, x.Pushed, x.Errors)
		}
		took := "-"
		if r.asked {
			took = r.took.Round(time.Millisecond).String()
			live++
		}
		var result string
		switch {
		case r.down:
			result = "skipped: down"
			notes = append(notes, fmt.Sprintf("%s is down: it was not repaired; run repair again once it is back", r.node))
		case r.err != nil:
			result = "failed: " + oneLine(r.err)
			failed = append(failed, r.node)
		case r.ok == 0 && len(r.refused) > 0:
			result = "not a replica"
			if len(parts) > 1 {
				result += " of " + joinPartitions(r.refused)
			}
		case len(r.refused) > 0:
			result = "ok; not a replica of " + joinPartitions(r.refused)
		default:
			result = "ok"
		}
		if r.err == nil && r.ok > 0 && r.res.Exchanges == 0 {
			notes = append(notes, fmt.Sprintf("%s compared nothing: it sees no peer replica alive", r.node))
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s\n", r.node, nums, took, result)
	}
	tw.Flush()
	writeNotes(w, notes)
	var missing []uint32
	for _, p := range parts {
		if !ran[p] {
			missing = append(missing, p)
		}
	}
	switch {
	case len(failed) > 0:
		return fmt.Errorf("repair failed on %s (%d of %d live nodes)", strings.Join(failed, ", "), len(failed), live)
	case live == 0:
		return errors.New("no live member to repair")
	case len(missing) > 0:
		return fmt.Errorf("no live node is a replica of partition %s (are its replicas down?)", joinPartitions(missing))
	}
	return nil
}

func writeNotes(w io.Writer, notes []string) {
	if len(notes) == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, n := range notes {
		fmt.Fprintln(w, "note: "+n)
	}
}

func joinPartitions(ps []uint32) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.FormatUint(uint64(p), 10)
	}
	return strings.Join(s, ", ")
}
