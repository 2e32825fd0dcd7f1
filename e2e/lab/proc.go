package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a program the lab runs inside a network namespace (through
// `ip netns exec`, which execs it, so the PID is the program's own). Its
// output is appended to a log file. It can be signalled, waited for and
// started again with the same command line.
type Proc struct {
	Name string // for messages, e.g. "vip-agent node1"
	NS   string // network namespace
	Log  string // log file
	bin  string
	args []string
	env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, valid once done is closed
}

// newProc describes a program; Start runs it.
func newProc(name, ns, log, bin string, args, env []string) *Proc {
	return &Proc{Name: name, NS: ns, Log: log, bin: bin, args: args, env: env}
}

// Start runs the program (again). It is an error to start it while it runs.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.done) {
		return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s log: %w", p.Name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== lab %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	args := append([]string{"netns", "exec", p.NS, p.bin}, p.args...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), p.env...)
	// Pdeathsig: an aborted test binary does not leave programs running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// PID is the running program's PID (0 when not started).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the program runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !closed(p.done)
}

// Exited returns a channel closed when the current run ends (nil if never
// started).
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is the result of the last run once it has ended.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Signal sends sig to the program by PID.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends sig and waits up to timeout for the program to end; after the
// timeout it sends SIGKILL and reports an error.
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) error {
	done := p.Exited()
	if done == nil || closed(done) {
		return nil
	}
	if err := p.Signal(sig); err != nil && !closed(done) {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		_ = p.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("%s did not stop within %v of %v; killed", p.Name, timeout, sig)
	}
}

// Kill sends SIGKILL and waits for the program to end.
func (p *Proc) Kill() {
	_ = p.Stop(syscall.SIGKILL, time.Minute)
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string { return tail(p.Log, n) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func closed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}
