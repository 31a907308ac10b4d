package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// handleMux upgrades POST /internal/v1/mux to a multiplexed connection
// (mux.go) and serves it, owned by the node, until either end closes it or
// the node stops.
func (n *Node) handleMux(w http.ResponseWriter, r *http.Request) {
	if !n.checkCluster(w, r) {
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), muxProtocol) {
		w.Header().Set("Upgrade", muxProtocol)
		writeJSON(w, http.StatusUpgradeRequired, errorBody{Error: "upgrade_required", Message: "this path upgrades to " + muxProtocol})
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal", Message: "cannot take over the connection: " + err.Error()})
		return
	}
	// The http.Server's deadlines no longer apply; frames have their own.
	_ = conn.SetDeadline(time.Time{})
	_, err = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + muxProtocol + "\r\n\r\n")
	if err == nil {
		err = rw.Flush()
	}
	if err != nil || !n.goBackground(func() { n.serveMux(conn, bufio.NewReaderSize(rw.Reader, muxReadBuffer)) }) {
		conn.Close()
	}
}

// serveMux answers the requests of one multiplexed connection, each on a
// worker of the node (goBackground), until the connection fails or the
// node stops; then it waits for the requests in progress.
func (n *Node) serveMux(conn net.Conn, r *bufio.Reader) {
	var handlers [256]internalHandler
	for path, h := range n.muxHandlers() {
		handlers[muxOps[path]] = h
	}
	w := newFrameWriter(conn)
	stop := context.AfterFunc(n.bg, func() { w.fail(errMuxClosed) })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run()
	}()
	sem := make(chan struct{}, muxMaxInflight)
	var err error
	for {
		var f []byte
		if f, err = readFrame(r, muxRequestHeader); err != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-w.done:
		}
		if w.broken() {
			break
		}
		wg.Add(1)
		if !n.goBackground(func() {
			defer func() {
				<-sem
				wg.Done()
			}()
			id, h, body := binary.BigEndian.Uint64(f), handlers[f[8]], f[muxRequestHeader:]
			status, resp := internalError(http.StatusBadRequest, "bad_request", "unknown operation")
			if h != nil {
				status, resp = h(n.bg, body)
			}
			_ = w.add(id, uint16(status), 2, resp)
		}) {
			<-sem
			wg.Done()
			err = errMuxClosed
			break
		}
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errMuxClosed) {
		n.log.Warn("multiplexed connection failed", "peer", conn.RemoteAddr().String(), "err", err)
	}
	w.fail(io.EOF)
	wg.Wait()
}
