package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// releaseStartupPagesAfter is how long after start-up the pages of the
// executable are handed back.
const releaseStartupPagesAfter = 10 * time.Second

// releaseStartupPages waits until ready reports true and then
// releaseStartupPagesAfter more, and asks the kernel to reclaim the pages of
// the agent's executable that this process has mapped (MADV_DONTNEED).
//
// Why: Go runs the init functions of every linked package at start-up
// (client-go and the API types alone are hundreds), which faults in nearly
// all of the binary's text and read-only data, 64 KiB around each touched
// page. Those clean, file-backed pages are never used again but stay
// counted in VmRSS: measured in the e2e lab with 1000 Services, 53 MB of an
// agent's 73 MB VmRSS were such pages (RssFile), against 21 MB of its own
// memory (RssAnon). Paged out, only the code actually running comes back,
// on demand, from the page cache.
func releaseStartupPages(ctx context.Context, log logr.Logger, ready func() bool) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(releaseStartupPagesAfter):
	}
	n, err := pageOutExecutable()
	if err != nil {
		log.V(1).Info("could not release the start-up pages of the executable", "err", err)
		return
	}
	log.V(1).Info("released the start-up pages of the executable", "mappedBytes", n)
}

// pageOutExecutable applies MADV_DONTNEED to the read-only mappings of this
// process's executable and returns how many bytes they span.
func pageOutExecutable() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		// address perms offset dev inode path: read-only or read-execute
		// private mappings of the executable (not its writable data).
		if len(f) < 6 || f[5] != exe || len(f[1]) != 4 || f[1][0] != 'r' || f[1][1] != '-' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); e != 0 {
			return total, fmt.Errorf("madvise(MADV_DONTNEED) %s: %w", f[0], e)
		}
		total += int(end - start)
	}
	return total, nil
}
