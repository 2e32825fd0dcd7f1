// Package responder is the lab's backend: a tiny HTTP server that answers
// every request with the name of the node it runs on, so a client can tell
// which node a virtual IP led it to.
//
// It runs as a mode of whatever binary imports e2e/lab (the test binary, the
// demo): lab starts `<self>` with EnvName set, and Main serves instead of
// the program's own main.
package responder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Environment variables that switch a binary into responder mode.
const (
	// EnvName is the node name to answer with; set it to run the responder.
	EnvName = "VIP_LAB_RESPONDER"
	// EnvAddr is the listen address (default ":80", IPv4 and IPv6).
	EnvAddr = "VIP_LAB_RESPONDER_ADDR"
)

// Handler answers with name and a newline.
func Handler(name string) http.Handler {
	body := []byte(name + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Connection", "close")
		_, _ = w.Write(body)
	})
}

// Serve answers on addr until ctx ends.
func Serve(ctx context.Context, name, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("responder: %w", err)
	}
	srv := &http.Server{Handler: Handler(name), ReadHeaderTimeout: 5 * time.Second}
	srv.SetKeepAlivesEnabled(false)
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("responder: %w", err)
	}
	return nil
}

// MaybeRun serves and exits the process when EnvName is set; otherwise it
// returns at once. Call it first thing (an init function).
func MaybeRun() {
	name := strings.TrimSpace(os.Getenv(EnvName))
	if name == "" {
		return
	}
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		addr = ":80"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Serve(ctx, name, addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
