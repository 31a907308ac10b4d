// Command quorumkv is the quorumkv binary: `serve` runs one node, `dev` runs
// a local 3-node cluster in one process, `cluster status|leave|remove` are
// the operator's membership commands, `repair` runs anti-entropy on every
// live node now, `bench` load-tests a cluster, `version` prints the
// version.
//
// This package is the command layer only: flags, environment variables,
// signals and wiring. Everything a test of another package would need lives
// in server/, storage/ and ring/.
package main

import (
	"context"
	"os"
)

// version is the binary's version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], newApp(os.Stdout, os.Stderr)))
}
