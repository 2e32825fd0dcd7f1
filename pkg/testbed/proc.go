package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one server process whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFrom int64         // size of the log file when this process started
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // result of cmd.Wait, valid after done is closed
}

// startProc starts bin with args, in the network namespace netns if it is
// not empty, appending stdout and stderr to logPath. The child gets SIGKILL if
// the thread that started it dies (Pdeathsig), so an aborted test binary does
// not leak servers.
func startProc(name, logPath, netns, bin string, args []string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logf.Close() // the child keeps its own descriptor
	st, err := logf.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s log: %w", name, err)
	}
	fmt.Fprintf(logf, "==== testbed: %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	path := bin
	if netns != "" {
		ip, err := exec.LookPath("ip")
		if err != nil {
			return nil, fmt.Errorf("netns %s needs the ip command: %w", netns, err)
		}
		// `ip netns exec` execs the command itself, so the PID is the server's.
		path, args = ip, append([]string{"netns", "exec", netns, bin}, args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFrom: st.Size(), done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process (by PID) and waits until it is reaped.
func (p *proc) kill() {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// ownLog returns what this process wrote to its log so far.
func (p *proc) ownLog() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || int64(len(b)) < p.logFrom {
		return ""
	}
	return string(b[p.logFrom:])
}

// portClash reports whether the process failed because a port was taken.
func (p *proc) portClash() bool {
	return strings.Contains(p.ownLog(), "address already in use")
}

// tailFile returns the last n lines of the file at path.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// InNetns runs fn on a fresh OS thread that has entered the network namespace
// name (from `ip netns add`); with an empty name it just calls fn. Sockets
// created by fn stay in that namespace after the thread switches back. If the
// thread cannot switch back it is discarded (its goroutine exits locked).
func InNetns(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := os.Open(filepath.Join("/run/netns", name))
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer target.Close()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime ends this thread when the goroutine returns.
			res <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		res <- ferr
	}()
	return <-res
}

// freePort asks the kernel for a free TCP port on addr (inside netns if set).
// The port is free only until someone else takes it; callers retry when a
// server then fails with "address already in use".
func freePort(netns, addr string) (int, error) {
	var port int
	err := InNetns(netns, func() error {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return err
		}
		defer l.Close()
		port = l.Addr().(*net.TCPAddr).Port
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", addr, err)
	}
	return port, nil
}

// freePorts returns n distinct free ports.
func freePorts(netns, addr string, n int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p, err := freePort(netns, addr)
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// dialer returns a DialContext function that opens sockets inside netns.
func dialer(netns string) func(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if netns == "" {
		return d.DialContext
	}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(netns, func() error {
			var err error
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}

// hostPort joins an IP and a port for URLs (brackets for IPv6).
func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// DialerIn returns a DialContext that opens its sockets in network
// namespace name (see InNetns).
func DialerIn(name string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(name, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}
