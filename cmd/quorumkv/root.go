package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix starts the environment variable of every flag: --node-id is
// QUORUMKV_NODE_ID.
const envPrefix = "QUORUMKV_"

// app is what the commands share: where they read the environment and write
// their output, and what serve does once its settings are resolved (tests
// replace it to inspect the settings without starting a node).
type app struct {
	lookupEnv func(string) (string, bool)
	stdout    io.Writer
	stderr    io.Writer
	serve     func(ctx context.Context, s serveSetup) error
	// adminTimeout bounds each HTTP call of the cluster commands, and the
	// status call of repair.
	adminTimeout time.Duration
}

func newApp(stdout, stderr io.Writer) *app {
	a := &app{lookupEnv: os.LookupEnv, stdout: stdout, stderr: stderr, adminTimeout: defaultAdminTimeout}
	a.serve = a.runServe
	return a
}

// run executes the command line args and returns the process exit code:
// 0 on success, 2 for a usage error (bad flag, bad value), 1 for anything
// else. Errors are printed as one line on stderr.
func run(ctx context.Context, args []string, a *app) int {
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "quorumkv: %s (see '%s --help')\n", oneLine(err), ue.cmd)
		return 2
	}
	fmt.Fprintf(a.stderr, "quorumkv: %s\n", oneLine(err))
	return 1
}

// oneLine joins a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// usageError is a mistake on the command line or in a QUORUMKV_*
// variable: exit code 2.
type usageError struct {
	cmd string // the command path, for the --help hint
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "quorumkv",
		Short: "A Dynamo-style eventually consistent JSON document database",
		Long: `quorumkv is a Dynamo-style, eventually consistent database for JSON documents
(any bytes, really), spoken to over HTTP. Any node coordinates a request
across the N replicas of the key; R and W choose how many must answer.

Every flag can also be set by an environment variable: QUORUMKV_ followed by
the flag name in upper case with dashes as underscores (--node-id is
QUORUMKV_NODE_ID). A flag given on the command line wins over the variable;
an empty variable counts as unset.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every subcommand takes its unset flags from the environment.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags(), a.lookupEnv); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			return nil
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	root.SetVersionTemplate("quorumkv {{.Version}}\n")
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newServeCmd(a), newDevCmd(a), newClusterCmd(a), newRepairCmd(a), newBenchCmd(a), newVersionCmd(a))
	return root
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(a.stdout, "quorumkv %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

// envName is the environment variable of a flag.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag of fs that the command line left unset from its
// environment variable, if that is set and not empty. A flag given on the
// command line wins.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "version" {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

// noArgs refuses positional arguments as a usage error (exit code 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	}
	return nil
}
