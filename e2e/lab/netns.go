package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vip-lb/vip/pkg/testbed"
)

// InNetns runs fn on a locked OS thread that has entered the network
// namespace name (one made by `ip netns add`). Sockets fn creates stay in
// that namespace after the thread switches back. A thread that cannot
// switch back is discarded.
func InNetns(name string, fn func() error) error {
	if name == "" {
		return fmt.Errorf("open netns: %w", os.ErrNotExist)
	}
	return testbed.InNetns(name, fn)
}

// DialerIn returns a DialContext that opens its sockets in netns name.
func DialerIn(name string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return testbed.DialerIn(name)
}

// run executes a command and returns its combined output; the error
// carries the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ip runs the ip command.
func ip(args ...string) (string, error) { return run(context.Background(), "ip", args...) }

// nsPattern matches the namespaces this package creates: <Prefix><pid>-<role>.
var nsPattern = regexp.MustCompile(`^` + Prefix + `(\d+)-[a-z0-9]+$`)

// Prefix starts the name of every namespace a lab creates; the creating
// process's PID follows, so stale namespaces of crashed runs are known.
const Prefix = "vlab"

// CleanStale deletes the namespaces of earlier labs whose process is gone,
// killing (by PID) whatever still runs inside them first. It returns the
// namespaces it deleted.
func CleanStale() ([]string, error) {
	out, err := ip("netns", "list")
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name := f[0]
		m := nsPattern.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || processExists(pid) {
			continue
		}
		killNetnsPids(name)
		if _, err := ip("netns", "del", name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, name)
	}
	return deleted, errors.Join(errs...)
}

// processExists reports whether a process with this PID exists.
func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killNetnsPids SIGKILLs, by PID, every process running in netns name.
func killNetnsPids(name string) {
	out, err := ip("netns", "pids", name)
	if err != nil {
		return
	}
	for _, s := range strings.Fields(out) {
		if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sysctls writes /proc/sys values inside netns name (key uses dots).
func sysctls(name string, kv ...string) error {
	return InNetns(name, func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			p := "/proc/sys/" + strings.ReplaceAll(kv[i], ".", "/")
			if err := os.WriteFile(p, []byte(kv[i+1]), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", kv[i], kv[i+1], name, err)
			}
		}
		return nil
	})
}
