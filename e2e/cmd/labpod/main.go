// Command labpod is the real-cluster lab's only container program, built
// static and packed into two images (e2e/cluster): `labpod pause` is the
// pods' sandbox (waits for SIGTERM, reaps orphans as PID 1), `labpod serve`
// the workload: an HTTP server on $PORT (default 8080) that answers each
// request with the node and pod it runs on and the client address it saw,
// so a test can tell where a VIP led and whether the source was kept.
// Called as `wget` (a link in the stand-in of upstream's agnhost image) it
// is a small static wget for upstream's e2e exec pods (wget.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if filepath.Base(os.Args[0]) == "wget" {
		if err := wget(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	var err error
	switch mode {
	case "pause":
		pause()
	case "serve":
		err = serve()
	default:
		err = fmt.Errorf("unknown mode %q (pause, serve)", mode)
	}
	if err != nil {
		slog.Error("labpod", "err", err)
		os.Exit(1)
	}
}

// pause waits for SIGTERM or SIGINT and reaps every child that ends.
func pause() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// Answer is what serve replies, one line: node=<n> pod=<p> client=<ip>.
func answer(node, pod string, r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return fmt.Sprintf("node=%s pod=%s client=%s\n", node, pod, host)
}

func serve() error {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	node, pod := os.Getenv("NODE_NAME"), os.Getenv("POD_NAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(answer(node, pod, r)))
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	srv.SetKeepAlivesEnabled(false)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	slog.Info("labpod serving", "port", port, "node", node, "pod", pod)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
