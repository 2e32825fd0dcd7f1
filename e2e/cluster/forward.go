package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// ForwardPort is where the forwarder listens on the host's loopback.
const ForwardPort = 16443

// StartForwarder starts `self forward` (a program that calls ServeForward)
// on the host, so that kubectl on the host reaches the API server inside
// the lab through 127.0.0.1:ForwardPort (the serving certificate covers
// 127.0.0.1). It writes the host kubeconfig. The forwarder is part of the
// cluster: Down stops it.
func (c *Cluster) StartForwarder(ctx context.Context, self string) error {
	p, err := startProc("forwarder", "", filepath.Join(c.st.Dir, "control", "forwarder.log"), self, "forward",
		"--listen", "127.0.0.1:"+strconv.Itoa(ForwardPort))
	if err := c.addControl(p, err); err != nil {
		return err
	}
	server := "https://127.0.0.1:" + strconv.Itoa(ForwardPort)
	if err := c.pki.kubeconfig(c.HostKubeconfig(), server, "admin"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ForwardPort))
		if err == nil {
			conn.Close()
			return true, nil
		}
		if !p.Alive() {
			return false, fmt.Errorf("forwarder exited:\n%s", tail(p.Log, 10))
		}
		return false, nil
	})
}

// ServeForward accepts TCP connections on listen (host namespace) and
// relays each to the API server, dialled from the client namespace.
func ServeForward(ctx context.Context, listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	dial := dialerIn(ClientNS)
	target := net.JoinHostPort(APIServerIP, strconv.Itoa(apiPort))
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer conn.Close()
			up, err := dial(ctx, "tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(up, conn); closeWrite(up) }()
			go func() { defer wg.Done(); _, _ = io.Copy(conn, up); closeWrite(conn) }()
			wg.Wait()
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
