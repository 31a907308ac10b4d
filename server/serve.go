package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// Server runs a node: its store, its node and its HTTP server.
type Server struct {
	Node  *Node
	store *storage.Store
	http  *http.Server
	done  chan error

	mu     sync.Mutex
	unused map[net.Conn]struct{} // accepted, no request read yet
}

// Start opens the store in dataDir, builds the node and serves HTTP on ln
// until Close. cacheSize is Pebble's block cache in bytes (0 for the
// default). Start takes ownership of ln: it is closed on error too.
func Start(cfg Config, dataDir string, cacheSize int64, ln net.Listener) (*Server, error) {
	cfg = cfg.withDefaults()
	st, err := storage.Open(storage.Config{Dir: dataDir, NodeID: cfg.NodeID, CacheSize: cacheSize,
		Hints: cfg.Handoff.Hints, Logger: cfg.Logger.With("node", cfg.NodeID)})
	if err != nil {
		closeListener(ln)
		return nil, err
	}
	node, err := NewNode(cfg, st, nil)
	if err != nil {
		st.Close()
		closeListener(ln)
		return nil, err
	}
	s := &Server{
		Node:   node,
		store:  st,
		done:   make(chan error, 1),
		unused: map[net.Conn]struct{}{},
	}
	s.http = &http.Server{
		Handler:           node.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnState:         s.trackConn,
	}
	go func() {
		err := s.http.Serve(ln)
		s.done <- err
		close(s.done)
	}()
	if err := node.start(); err != nil {
		_ = s.Close(context.Background())
		return nil, err
	}
	node.log.Info("serving", "addr", ln.Addr().String(), "gossip", *node.gossip.addr.Load(), "actor", st.Actor(),
		"cluster", node.cluster, "ring_version", node.placement().Version())
	return s, nil
}

func closeListener(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

// Done is closed when the HTTP server stops; it first receives the error
// that stopped it (http.ErrServerClosed after Close).
func (s *Server) Done() <-chan error { return s.done }

// trackConn remembers connections that have not sent a request yet.
func (s *Server) trackConn(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == http.StateNew {
		s.unused[c] = struct{}{}
	} else {
		delete(s.unused, c)
	}
}

// Close stops accepting requests, lets in-flight ones finish (until ctx is
// done), stops background work and closes the store.
func (s *Server) Close(ctx context.Context) error {
	// http.Server.Shutdown waits up to 5 s for connections that were
	// accepted but never sent a request (a peer's connection pool dials
	// ahead). Nothing is in flight on them, so close them while it waits.
	// Leave gossip first, so peers stop routing to this node while its
	// in-flight requests drain.
	s.Node.gossip.stop(ctx)
	shutdown := make(chan error, 1)
	go func() { shutdown <- s.http.Shutdown(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for waiting := true; waiting; {
		s.mu.Lock()
		for c := range s.unused {
			c.Close()
		}
		s.mu.Unlock()
		select {
		case err = <-shutdown:
			waiting = false
		case <-tick.C:
		}
	}
	if err != nil {
		s.http.Close()
	}
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	s.Node.Close(ctx)
	if cerr := s.store.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
	}
	return err
}
