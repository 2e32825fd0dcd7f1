package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Environment variables read by this package.
const (
	// EnvBinDir names a folder holding the etcd and kube-apiserver binaries;
	// it takes precedence over <repo>/bin.
	EnvBinDir = "VIP_BIN_DIR"
	// EnvRequireAPIServer, when "1", makes Start fail instead of skip when a
	// binary is missing, so CI cannot silently skip the integration tests.
	EnvRequireAPIServer = "VIP_REQUIRE_APISERVER"
)

// Default values used when the corresponding Options field is empty.
const (
	DefaultAddress      = "127.0.0.1"
	DefaultServiceCIDRs = "10.96.0.0/12,fd00:10:96::/112"
	DefaultReadyTimeout = 90 * time.Second
)

// Options configures StartProcess. The zero value is usable: every empty
// field gets a default.
type Options struct {
	// BinDir holds the etcd and kube-apiserver binaries. Default: $VIP_BIN_DIR,
	// else the bin folder next to the nearest go.mod above the working dir.
	BinDir string
	// Address is the IP both servers bind to. Default 127.0.0.1.
	Address string
	// Netns, when set, runs both servers with `ip netns exec Netns`; Address
	// must then be an address configured inside that namespace.
	Netns string
	// Dir is the parent for the Env's temporary folder. Default os.TempDir().
	Dir string
	// ServiceCIDRs is the value of --service-cluster-ip-range (one range, or
	// an IPv4 and an IPv6 range separated by a comma for dual-stack).
	ServiceCIDRs string
	// APIServerArgs are extra kube-apiserver flags, appended last.
	APIServerArgs []string
	// EtcdArgs are extra etcd flags, appended last.
	EtcdArgs []string
	// ReadyTimeout bounds the wait for etcd /health and apiserver /readyz
	// (each). Default 90s (the machines are small and shared).
	ReadyTimeout time.Duration
	// Logf receives progress messages. Default: discard.
	Logf func(format string, args ...any)
}

// Option changes Options; used by Start.
type Option func(*Options)

// WithNetns runs etcd and kube-apiserver inside the named network namespace
// (via `ip netns exec`). Combine with WithAddress.
func WithNetns(name string) Option { return func(o *Options) { o.Netns = name } }

// WithAddress sets the IP both servers bind to (default 127.0.0.1).
func WithAddress(ip string) Option { return func(o *Options) { o.Address = ip } }

// WithBinDir sets the folder holding the etcd and kube-apiserver binaries.
func WithBinDir(dir string) Option { return func(o *Options) { o.BinDir = dir } }

// WithServiceCIDRs sets --service-cluster-ip-range (for example
// "10.96.0.0/12" for single-stack IPv4).
func WithServiceCIDRs(cidrs string) Option { return func(o *Options) { o.ServiceCIDRs = cidrs } }

// WithAPIServerArgs appends extra kube-apiserver flags.
func WithAPIServerArgs(args ...string) Option {
	return func(o *Options) { o.APIServerArgs = append(o.APIServerArgs, args...) }
}

// WithEtcdArgs appends extra etcd flags.
func WithEtcdArgs(args ...string) Option {
	return func(o *Options) { o.EtcdArgs = append(o.EtcdArgs, args...) }
}

// WithReadyTimeout bounds the wait for each server to become ready.
func WithReadyTimeout(d time.Duration) Option { return func(o *Options) { o.ReadyTimeout = d } }

// MissingBinaryError reports that a server binary was not found.
// Use errors.As to detect it.
type MissingBinaryError struct {
	// Path is the location that was checked.
	Path string
	// Err is the underlying error from os.Stat.
	Err error
}

// Error implements error.
func (e *MissingBinaryError) Error() string {
	return fmt.Sprintf("testbed: %s not found (run `make bin/kube-apiserver bin/etcd` or set %s): %v",
		e.Path, EnvBinDir, e.Err)
}

// Unwrap returns the underlying error.
func (e *MissingBinaryError) Unwrap() error { return e.Err }

// withDefaults returns a copy of o with every empty field filled in.
func (o Options) withDefaults() (Options, error) {
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	if o.ServiceCIDRs == "" {
		o.ServiceCIDRs = DefaultServiceCIDRs
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.BinDir == "" {
		dir, err := DefaultBinDir()
		if err != nil {
			return o, err
		}
		o.BinDir = dir
	}
	return o, nil
}

// DefaultBinDir returns $VIP_BIN_DIR if set, else <repo>/bin where <repo> is
// the nearest folder at or above the working directory that holds a go.mod.
func DefaultBinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testbed: working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("testbed: no go.mod above %s and %s is not set: %w", wd, EnvBinDir, os.ErrNotExist)
		}
	}
}

// binaries returns the paths of etcd and kube-apiserver in o.BinDir, or a
// *MissingBinaryError.
func (o Options) binaries() (etcd, apiserver string, err error) {
	etcd = filepath.Join(o.BinDir, "etcd")
	apiserver = filepath.Join(o.BinDir, "kube-apiserver")
	for _, p := range []string{etcd, apiserver} {
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			continue
		}
		if err == nil {
			err = errors.New("not an executable file")
		}
		return "", "", &MissingBinaryError{Path: p, Err: err}
	}
	return etcd, apiserver, nil
}
