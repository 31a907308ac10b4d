package bench

import (
	"fmt"
	"math/rand/v2"
)

// op is one kind of operation.
type op int

const (
	opRead   op = iota // Get at R
	opUpdate           // Put at W, with the worker's context of the key
	opRMW              // client.Update: a read at R and a write at W
	numOps
)

var opNames = [numOps]string{"read", "update", "rmw"}

func (o op) String() string { return opNames[o] }

// mix is the share of each operation, summing to 1.
type mix [numOps]float64

func (w Workload) mix() (mix, error) {
	switch w {
	case WorkloadA:
		return mix{opRead: 0.5, opUpdate: 0.5}, nil
	case WorkloadB:
		return mix{opRead: 0.95, opUpdate: 0.05}, nil
	case WorkloadC:
		return mix{opRead: 1}, nil
	case WorkloadF:
		return mix{opRead: 0.5, opRMW: 0.5}, nil
	case WorkloadWrite:
		return mix{opUpdate: 1}, nil
	}
	return mix{}, fmt.Errorf("workload %q: want a, b, c, f or write", w)
}

// choose draws an operation.
func (m mix) choose(r *rand.Rand) op {
	u := r.Float64()
	for o := range numOps {
		if u < m[o] {
			return o
		}
		u -= m[o]
	}
	// Rounding: the last operation with a share.
	for o := numOps - 1; o > 0; o-- {
		if m[o] > 0 {
			return o
		}
	}
	return opRead
}
