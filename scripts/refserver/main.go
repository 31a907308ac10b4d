// Command refserver runs the two speed references of issue 6, made of the Go
// standard library only. They are honest baselines to compare quorumkv with,
// driven by the same tool at the same connection count in the same run (see
// scripts/speed.sh); they are not part of the product.
//
//	refserver noop   --addr 127.0.0.1:0
//	refserver quorum --addr 127.0.0.1:0 --backends HOST:PORT,HOST:PORT
//
// noop answers every request with a 200 and the body "ok", after draining
// the request body: the fastest any HTTP server in Go can answer here.
//
// quorum is a naive quorum floor: a coordinator that does no work of its
// own but forwards each request (method, path with query, body) over
// keep-alive HTTP to every backend in parallel and answers 200 once all of
// them answered (with two backends, as a W=2 or R=2 request does when both
// replicas are remote). Its transport keeps up to 256 idle connections per
// backend, since Go's default of 2 would make it needlessly slow.
//
// Both print the address they listen on as the first line of stdout, so a
// script can pass port 0 and learn the port. SIGINT or SIGTERM shuts them
// down gracefully.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxIdlePerHost is the number of idle keep-alive connections the quorum
// coordinator keeps per backend (Go's default is 2).
const maxIdlePerHost = 256

// forwardTimeout bounds each forwarded request.
const forwardTimeout = 10 * time.Second

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "refserver:", err)
		os.Exit(2)
	}
}

func usage() string {
	return "usage: refserver noop --addr HOST:PORT\n       refserver quorum --addr HOST:PORT --backends HOST:PORT,HOST:PORT"
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage())
	}
	mode := args[0]
	fs := flag.NewFlagSet("refserver "+mode, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	backends := fs.String("backends", "", "quorum: comma-separated backends HOST:PORT to forward to")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), usage())
	}

	var h http.Handler
	switch mode {
	case "noop":
		if *backends != "" {
			return errors.New("noop takes no --backends")
		}
		h = noopHandler()
	case "quorum":
		list := splitList(*backends)
		if len(list) == 0 {
			return errors.New("quorum needs --backends HOST:PORT,HOST:PORT")
		}
		q := newQuorum(list)
		defer q.client.CloseIdleConnections()
		h = q
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage())
		return nil
	default:
		return fmt.Errorf("unknown mode %q\n%s", mode, usage())
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, ln.Addr().String())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, ln, h)
}

// serve serves h on ln until ctx is done, then shuts down gracefully.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

var okBody = []byte("ok")

// noopHandler answers every request with a 200 "ok" after draining its body.
func noopHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(okBody)
	})
}

// quorum forwards each request to every backend in parallel and answers
// once all answered.
type quorum struct {
	backends []string
	client   *http.Client
}

func newQuorum(backends []string) *quorum {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = maxIdlePerHost * len(backends)
	tr.MaxIdleConnsPerHost = maxIdlePerHost
	return &quorum{backends: backends, client: &http.Client{Transport: tr, Timeout: forwardTimeout}}
}

func (q *quorum) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	errs := make([]error, len(q.backends))
	var wg sync.WaitGroup
	for i, b := range q.backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = q.forward(r, b, body)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(okBody)
}

// forward sends one copy of r, with body, to backend and drains the answer
// so that the connection is reused.
func (q *quorum) forward(r *http.Request, backend string, body []byte) error {
	u := "http://" + backend + r.URL.RequestURI()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s answered %s", backend, resp.Status)
	}
	return nil
}
