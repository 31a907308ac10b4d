package bench

import (
	"context"
	"sync/atomic"
	"time"
)

// clock is the time the scheduler and the workers use; tests use a fake.
type clock interface {
	Now() time.Time
	// SleepUntil returns at t, or with ctx's error when ctx ends first.
	SleepUntil(ctx context.Context, t time.Time) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// schedule hands the workers the intended start time of each operation.
// With a rate, operation i is due at start + i/rate whoever runs it, and
// its latency counts from then: a worker that falls behind starts late, and
// the time the operation waited shows in its latency instead of vanishing
// (coordinated omission). Without a rate, an operation is due when a
// worker is free to start it.
type schedule struct {
	clk   clock
	start time.Time
	rate  float64 // operations per second over all workers; 0: unlimited
	next  atomic.Int64
}

func newSchedule(clk clock, start time.Time, rate float64) *schedule {
	return &schedule{clk: clk, start: start, rate: rate}
}

// due returns operation i's intended start time.
func (s *schedule) due(i int64) time.Time {
	return s.start.Add(time.Duration(float64(i) * float64(time.Second) / s.rate))
}

// wait claims the next operation, waits until it is due, and returns its
// intended start time.
func (s *schedule) wait(ctx context.Context) (time.Time, error) {
	if s.rate == 0 {
		return s.clk.Now(), ctx.Err()
	}
	t := s.due(s.next.Add(1) - 1)
	return t, s.clk.SleepUntil(ctx, t)
}
