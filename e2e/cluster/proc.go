package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one process the cluster started, identified by PID and start
// time (so a reused PID is never signalled).
type Proc struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // field 22 of /proc/<pid>/stat
	Log   string `json:"log"`
}

// startTime reads the start time of pid in clock ticks since boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, os.ErrNotExist // a zombie has ended
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Alive reports whether the process is still the one that was started.
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := startTime(p.PID)
	return err == nil && st == p.Start
}

// Signal sends sig to the process if it is still the one started.
func (p Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL, and waits until the
// process has gone.
func (p Proc) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if waitGone(p, grace) {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !waitGone(p, 10*time.Second) {
		return fmt.Errorf("%s (pid %d) still alive after SIGKILL", p.Name, p.PID)
	}
	return nil
}

func waitGone(p Proc, d time.Duration) bool {
	end := time.Now().Add(d)
	for p.Alive() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// startProc starts bin in network namespace netns (none when empty) with
// its output appended to logPath, in a session of its own so that it
// outlives the starting process (`make cluster`). The starting process
// reaps it if it ends first.
func startProc(name, netns, logPath, bin string, args ...string) (Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	path := bin
	if netns != "" {
		// nsenter execs bin, so the PID is bin's own.
		path, args = "nsenter", append([]string{"--net=" + netnsPath(netns), "--", bin}, args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	p := Proc{Name: name, PID: cmd.Process.Pid, Log: logPath}
	// The start time identifies the process; read it before nsenter could
	// have exec'd (same PID, same start time either way).
	if p.Start, err = startTime(p.PID); err != nil {
		return p, fmt.Errorf("%s exited at once (log %s): %w", name, logPath, err)
	}
	return p, nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a command and returns its combined output; the error carries it.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// runIn runs a command in network namespace netns.
func runIn(netns string, name string, args ...string) (string, error) {
	return run("nsenter", append([]string{"--net=" + netnsPath(netns), "--", name}, args...)...)
}
