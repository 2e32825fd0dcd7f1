// Package benchout records the figures of the end-to-end benchmarks in
// _out/bench.txt, one block per benchmark, each starting with a header line
// (benchmark name, time, Go version, CPUs, load averages).
//
// The block is printed and appended to $VIP_BENCH_OUT, or to
// <repo>/_out/bench.txt. `make bench` keeps that file (go test's own output
// goes to _out/bench.log) and appends the Benchmark result lines after the
// run.
package benchout

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// EnvOut names the file to append to instead of <repo>/_out/bench.txt.
const EnvOut = "VIP_BENCH_OUT"

// Write records the lines of one benchmark under a header line.
func Write(name string, lines ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s  %s  %s  %d cpu  load %s\n", name, time.Now().UTC().Format(time.RFC3339),
		runtime.Version(), runtime.NumCPU(), loadavg())
	for _, l := range lines {
		for _, s := range strings.Split(strings.TrimRight(l, "\n"), "\n") {
			fmt.Fprintf(&b, "   %s\n", s)
		}
	}
	block := b.String()
	_, _ = io.WriteString(os.Stdout, block)
	path := os.Getenv(EnvOut)
	if path == "" {
		dir, err := repoDir()
		if err != nil {
			return err
		}
		path = filepath.Join(dir, "_out", "bench.txt")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(block)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

// loadavg is the 1, 5 and 15 minute load averages (the machine may be
// shared: figures measured under load are worse).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// repoDir is the nearest folder at or above the working directory with a go.mod.
func repoDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("benchout: no go.mod above %s", wd)
		}
	}
}
