package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// zipfConstant is YCSB's default skew.
const zipfConstant = 0.99

// keyChooser picks key indexes in [0, records).
type keyChooser interface {
	next(r *rand.Rand) int
}

func newKeyChooser(d Distribution, records int) keyChooser {
	if d == Uniform {
		return uniform(records)
	}
	return newZipfian(records, zipfConstant)
}

type uniform int

func (u uniform) next(r *rand.Rand) int { return r.IntN(int(u)) }

// zipfian draws item i (0 the most popular) with probability proportional
// to 1/(i+1)^theta: the algorithm of Gray et al., "Quickly generating
// billion-record synthetic databases" (SIGMOD 1994), as YCSB's
// ZipfianGenerator has it. YCSB then scrambles the items by hashing so
// that popular keys are not neighbours in a range-partitioned store;
// quorumkv hashes every key to its partition, so the ranks are used as
// key indexes directly.
type zipfian struct {
	n            float64
	theta        float64
	alpha        float64
	zetan        float64
	eta          float64
	halfPowTheta float64
}

func newZipfian(n int, theta float64) *zipfian {
	var zetan, zeta2 float64
	for i := 1; i <= n; i++ {
		zetan += 1 / math.Pow(float64(i), theta)
		if i == 2 {
			zeta2 = zetan
		}
	}
	if n < 2 {
		zeta2 = zetan
	}
	z := &zipfian{n: float64(n), theta: theta, alpha: 1 / (1 - theta), zetan: zetan, halfPowTheta: math.Pow(0.5, theta)}
	z.eta = (1 - math.Pow(2/z.n, 1-theta)) / (1 - zeta2/zetan)
	return z
}

func (z *zipfian) next(r *rand.Rand) int {
	u := r.Float64()
	uz := u * z.zetan
	switch {
	case uz < 1 || z.n < 2:
		return 0
	case uz < 1+z.halfPowTheta:
		return 1
	}
	i := int(z.n * math.Pow(z.eta*u-z.eta+1, z.alpha))
	return min(i, int(z.n)-1)
}

// keyName is the key of index i.
func keyName(i int) string { return fmt.Sprintf("key%08d", i) }
