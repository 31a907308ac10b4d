package server

import (
	"sync"
	"sync/atomic"
)

// workers runs tasks on goroutines that outlive them. A new goroutine
// starts on a small stack, and a task that goes deep, as every Pebble Get
// does, pays for copying the stack as it grows: on a replica serving writes
// that was an eighth of its CPU. A worker keeps its grown stack for the
// next task. Up to maxIdle workers wait for work; a task that finds none
// waiting gets a new one, so tasks never queue behind each other.
type workers struct {
	tasks   chan func() // unbuffered: a send succeeds only if a worker waits
	idle    atomic.Int32
	maxIdle int32
	done    <-chan struct{} // closed when the owner stops: idle workers exit
	wg      *sync.WaitGroup // counts the workers, for the owner to wait on
}

func newWorkers(maxIdle int, done <-chan struct{}, wg *sync.WaitGroup) *workers {
	return &workers{tasks: make(chan func()), maxIdle: int32(maxIdle), done: done, wg: wg}
}

// run runs fn on a waiting worker or a new one. The owner must not call it
// once it has started to wait on wg.
func (p *workers) run(fn func()) {
	select {
	case p.tasks <- fn:
		return
	default:
	}
	p.wg.Add(1)
	go p.work(fn)
}

func (p *workers) work(fn func()) {
	defer p.wg.Done()
	for {
		fn()
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		select {
		case fn = <-p.tasks:
			p.idle.Add(-1)
		case <-p.done:
			p.idle.Add(-1)
			return
		}
	}
}
