package ring

import (
	"flag"
	"os"
	"strconv"
	"testing"
)

// rapidSeed makes the property tests deterministic: the movement bounds are
// statistical, so a fixed seed keeps `go test` reproducible. Explore other
// inputs with -rapid.seed=0 (random; rapid prints the seed of a failure) or
// -rapid.seed=N, or the RAPID_SEED environment variable.
const rapidSeed = 0x71ab5eed

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "rapid.seed" })
	if _, env := os.LookupEnv("RAPID_SEED"); !explicit && !env {
		if err := flag.Set("rapid.seed", strconv.FormatUint(rapidSeed, 10)); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
