package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/server"
)

// defaultAdminTimeout bounds every admin call of the cluster commands. A
// status call waits up to 2s for the members' own counts, so this leaves
// room.
const defaultAdminTimeout = 10 * time.Second

// defaultAdminAddr is the node the cluster commands talk to by default
// (n1 of `quorumkv dev`).
const defaultAdminAddr = "127.0.0.1:8080"

func newClusterCmd(a *app) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect and change cluster membership (status, leave, remove)",
		Long: `Inspect and change cluster membership through a node's admin API.

Membership changes only by an explicit join (quorumkv serve --join), leave
or remove: a crash, pause or network partition changes only liveness.

  status   every member's state, liveness, ownership, pending hints, transfers
           and last anti-entropy round
  leave    the node at --addr leaves: it hands its partitions over, then exits
  remove   drop a dead node; the survivors re-replicate its partitions`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf(cmd, "want a subcommand: status, leave or remove")
		},
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", defaultAdminAddr, "HTTP address (host:port) of the node to ask")
	client := &adminClient{addr: &addr, http: &http.Client{Timeout: a.adminTimeout}}
	cmd.AddCommand(newClusterStatusCmd(a, client), newClusterLeaveCmd(a, client), newClusterRemoveCmd(a, client))
	return cmd
}

func newClusterStatusCmd(a *app, c *adminClient) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [--addr HOST:PORT] [-o table|json]",
		Short: "Show every member as the node at --addr sees it",
		Long: `Show every member as the node at --addr sees it: its state (joining, member,
leaving, removed), its liveness (alive or down, from the failure detector),
its HTTP address, its share of the ring's replica slots, the hints it holds
for other nodes (asked of the node itself: "-" when it cannot be asked), the
partitions it still has to receive, and when it last completed a scheduled
anti-entropy round (every partition it keeps compared with a peer; "never"
since it started, "-" when it cannot be asked). The first line names the
ring version and whether partition transfers have settled.

-o json prints the node's answer (GET /v1/admin/status) as it is.`,
		Example: "  quorumkv cluster status --addr 127.0.0.1:8080",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usageErrorf(cmd, "-o %q: want table or json", output)
			}
			if err := c.check(cmd); err != nil {
				return err
			}
			body, err := c.do(cmd.Context(), http.MethodGet, "/v1/admin/status")
			if err != nil {
				return err
			}
			if output == "json" {
				_, err := a.stdout.Write(body)
				return err
			}
			var st server.ClusterStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("%s answered an unreadable status: %v", c.host(), err)
			}
			printStatus(a.stdout, st, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newClusterLeaveCmd(a *app, c *adminClient) *cobra.Command {
	return &cobra.Command{
		Use:   "leave [--addr HOST:PORT]",
		Short: "Make the node at --addr leave the cluster",
		Long: `Make the node at --addr leave the cluster gracefully. The node turns
"leaving": its partitions get new owners, which pull them from it; once
nothing counts on it any more and its hints are delivered, it marks itself
removed and its process exits. Follow it with quorumkv cluster status on
another node. A leave that would leave fewer than N members is refused.

To take a node out that is dead, use quorumkv cluster remove instead.`,
		Example: "  quorumkv cluster leave --addr 10.0.0.3:8080",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.check(cmd); err != nil {
				return err
			}
			body, err := c.do(cmd.Context(), http.MethodPost, "/v1/admin/leave")
			if err != nil {
				return err
			}
			var r struct{ Node, State string }
			if err := json.Unmarshal(body, &r); err != nil || r.Node == "" {
				return fmt.Errorf("%s answered an unreadable reply to leave: %q", c.host(), strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(a.stdout, "%s is %s: it hands its partitions over, then exits (follow with: quorumkv cluster status --addr <another node>)\n", r.Node, r.State)
			return nil
		},
	}
}

func newClusterRemoveCmd(a *app, c *adminClient) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE [--addr HOST:PORT]",
		Short: "Remove a dead node from the cluster",
		Long: `Remove a dead node from the cluster, through any live node (--addr). The
survivors take over its partitions and copy them from the remaining
replicas. A node the failure detector sees alive is refused (it should
leave instead: quorumkv cluster leave --addr <that node>), and so is a
remove that would leave fewer than N members.

A removed node cannot come back with its old data: wipe its data directory
and join it again as a new node.`,
		Example: "  quorumkv cluster remove n3 --addr 10.0.0.1:8080",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf(cmd, "want exactly one node id, got %d arguments", len(args))
			}
			if err := ring.ValidateNodeID(args[0]); err != nil {
				return usageErrorf(cmd, "node %q: %v", args[0], err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.check(cmd); err != nil {
				return err
			}
			body, err := c.do(cmd.Context(), http.MethodPost, "/v1/admin/remove/"+url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			var r struct{ Node, State string }
			if err := json.Unmarshal(body, &r); err != nil || r.Node == "" {
				return fmt.Errorf("%s answered an unreadable reply to remove: %q", c.host(), strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(a.stdout, "%s is %s: the other members re-replicate its partitions\n", r.Node, r.State)
			return nil
		},
	}
}

// adminClient calls one node's admin API.
type adminClient struct {
	addr *string // --addr, as given
	base string  // http://host:port, set by check
	http *http.Client
}

// check validates --addr: host:port, optionally with an http:// prefix.
func (c *adminClient) check(cmd *cobra.Command) error {
	addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(*c.addr), "http://"), "/")
	if strings.Contains(addr, "://") {
		return usageErrorf(cmd, "--addr %q: want host:port (or http://host:port)", *c.addr)
	}
	if _, err := parseAddr(addr, false); err != nil {
		return usageErrorf(cmd, "--addr %q: %v", *c.addr, err)
	}
	c.base = "http://" + addr
	return nil
}

func (c *adminClient) host() string { return strings.TrimPrefix(c.base, "http://") }

// do sends a request without a body and returns the body of a 2xx answer.
// Anything else is an error of one line: the server's JSON error message
// when it sent one.
func (c *adminClient) do(ctx context.Context, method, path string) ([]byte, error) {
	status, body, err := c.send(ctx, method, path)
	if err != nil {
		return nil, err
	}
	if status/100 == 2 {
		return body, nil
	}
	return nil, c.answerError(status, body)
}

// send sends a request without a body and returns the status and body of
// whatever the node answered; the error is for no answer at all.
func (c *adminClient) send(ctx context.Context, method, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.http.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, fmt.Errorf("cannot reach %s: %v", c.host(), err)
	}
	defer resp.Body.Close()
	defer c.http.CloseIdleConnections()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer of %s: %v", c.host(), err)
	}
	return resp.StatusCode, body, nil
}

// answerError describes a non-2xx answer in one line: the server's JSON
// error message when it sent one, else the start of the body.
func (c *adminClient) answerError(status int, body []byte) error {
	var e struct{ Error, Message string }
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return fmt.Errorf("%s answered %d %s: %s", c.host(), status, e.Error, e.Message)
	}
	return fmt.Errorf("%s answered %d %s: %q", c.host(), status, http.StatusText(status), clip(body))
}

// clip returns the start of a body that is not what was expected, for an
// error message.
func clip(body []byte) string {
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	return text
}

// printStatus prints a cluster status as a table; now is the time the
// last anti-entropy rounds are measured from.
func printStatus(w io.Writer, st server.ClusterStatus, now time.Time) {
	transfers := "transfers settled"
	if !st.Settled {
		transfers = "transfers pending"
	}
	fmt.Fprintf(w, "ring %s as seen by %s; %s\n\n", st.RingVersion, st.Node, transfers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tLIVENESS\tADDRESS\tOWNERSHIP\tPENDING HINTS\tTRANSFERS\tLAST AAE ROUND")
	var notes []string
	for _, m := range st.Members {
		live := "down"
		if m.Alive {
			live = "alive"
		}
		hints, round := "-", "-"
		if m.PendingHints != nil {
			hints = strconv.FormatInt(*m.PendingHints, 10)
			round = "never"
		}
		if m.LastRound != nil {
			round = ago(now.Sub(*m.LastRound))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f%%\t%s\t%d\t%s\n", m.Node, m.State, live, m.Address, 100*m.Ownership, hints, m.Transfers, round)
		switch {
		case m.Error != "":
			notes = append(notes, fmt.Sprintf("%s did not report its own status: %s", m.Node, m.Error))
		case m.RingVersion != "" && m.RingVersion != st.RingVersion:
			notes = append(notes, fmt.Sprintf("%s is on ring %s (gossip has not converged yet)", m.Node, m.RingVersion))
		}
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "note: "+n)
		}
	}
}

// ago describes how long ago something was, to the second under an hour
// and less precisely beyond: "12s ago", "4m5s ago", "3h12m ago", "2d5h
// ago". A time in the future (clocks differ) counts as now.
func ago(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds ago", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%dh ago", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}
