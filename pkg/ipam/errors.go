package ipam

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers branch with errors.Is and never match on message text.
var (
	// ErrPoolExhausted means the pools serving a namespace and family exist but
	// have no free address left.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrNoPool means no pool serves the namespace for the wanted family.
	ErrNoPool = errors.New("no address pool for namespace and family")
	// ErrConflict means the address is held by another Service that does not
	// allow sharing, or whose ports clash with the request.
	ErrConflict = errors.New("address held by another service")
	// ErrForbidden means the address must never be handed out (loopback,
	// multicast, link-local, unspecified, broadcast, or refused by the
	// allocator's Forbidden function).
	ErrForbidden = errors.New("address is forbidden")
	// ErrBadEntry means one entry of the pools ConfigMap could not be used.
	ErrBadEntry = errors.New("bad pool configuration entry")
	// ErrOutsidePools means a static address lies outside every pool that
	// serves the namespace and the configuration does not allow that.
	ErrOutsidePools = errors.New("address outside the pools")
	// ErrOtherPool means a static address lies inside a pool that does not
	// serve the Service's namespace.
	ErrOtherPool = errors.New("address in another namespace's pool")
	// ErrBadRequest means the request itself is malformed (no key, an invalid
	// address or an unknown family).
	ErrBadRequest = errors.New("malformed address request")
)

// EntryError describes one rejected ConfigMap entry. It wraps ErrBadEntry.
type EntryError struct {
	// Key is the ConfigMap key, e.g. "cidr-global".
	Key string
	// Entry is the offending comma-separated element, or the whole value for
	// single-valued keys.
	Entry string
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error.
func (e *EntryError) Error() string {
	return fmt.Sprintf("%s: key %q, entry %q: %s", ErrBadEntry, e.Key, e.Entry, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBadEntry) true.
func (e *EntryError) Unwrap() error { return ErrBadEntry }

func badEntry(key, entry, format string, args ...any) error {
	return &EntryError{Key: key, Entry: entry, Reason: fmt.Sprintf(format, args...)}
}
