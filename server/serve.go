package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// Server runs a node: its store, its node and its HTTP server.
type Server struct {
	Node  *Node
	store *storage.Store
	http  *http.Server
	done  chan error
}

// Start opens the store in dataDir, builds the node and serves HTTP on ln
// until Close. cacheSize is Pebble's block cache in bytes (0 for the
// default). Start takes ownership of ln: it is closed on error too.
func Start(cfg Config, dataDir string, cacheSize int64, ln net.Listener) (*Server, error) {
	cfg = cfg.withDefaults()
	st, err := storage.Open(storage.Config{Dir: dataDir, NodeID: cfg.NodeID, CacheSize: cacheSize, Logger: cfg.Logger.With("node", cfg.NodeID)})
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
		Node:  node,
		store: st,
		http: &http.Server{
			Handler:           node.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
		done: make(chan error, 1),
	}
	go func() {
		err := s.http.Serve(ln)
		s.done <- err
		close(s.done)
	}()
	node.log.Info("serving", "addr", ln.Addr().String(), "actor", st.Actor(), "cluster", node.cluster, "ring_version", node.Table().Version())
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

// Close stops accepting requests, lets in-flight ones finish (until ctx is
// done), stops background work and closes the store.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	s.Node.Close()
	if cerr := s.store.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
	}
	return err
}
