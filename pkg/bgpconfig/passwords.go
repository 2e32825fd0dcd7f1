package bgpconfig

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultPasswordKey is the file, in a password folder, whose content is the
// password of every peer that has no file of its own.
const DefaultPasswordKey = "password"

// Passwords are BGP passwords read from a file or a folder mounted from a
// Secret.
type Passwords struct {
	// Default applies to peers without their own entry.
	Default string
	// ByPeer holds per-peer passwords.
	ByPeer map[netip.Addr]string
}

// LoadPasswords reads path. A file holds one password for every peer. A
// folder (a Secret mounted as a volume) holds a file per peer named after
// its address, with ':' written as '-' for IPv6 since Secret keys cannot
// hold ':' (fd00::1 → fd00--1), and optionally a file named "password" for
// the others. One trailing newline is dropped from each file.
func LoadPasswords(path string) (Passwords, error) {
	var pw Passwords
	st, err := os.Stat(path)
	if err != nil {
		return pw, fmt.Errorf("%w: password file: %v", ErrInvalid, err)
	}
	if !st.IsDir() {
		pw.Default, err = readSecret(path)
		return pw, err
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return pw, fmt.Errorf("%w: password folder: %v", ErrInvalid, err)
	}
	pw.ByPeer = map[netip.Addr]string{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue // the ..data links of a mounted Secret
		}
		full := filepath.Join(path, name)
		if fi, err := os.Stat(full); err != nil || fi.IsDir() {
			continue
		}
		v, err := readSecret(full)
		if err != nil {
			return pw, err
		}
		if name == DefaultPasswordKey {
			pw.Default = v
			continue
		}
		a, err := netip.ParseAddr(strings.ReplaceAll(name, "-", ":"))
		if err != nil {
			a, err = netip.ParseAddr(name)
		}
		if err != nil {
			return pw, fmt.Errorf("%w: password folder %s: file %q is neither %q nor a peer address", ErrInvalid, path, name, DefaultPasswordKey)
		}
		pw.ByPeer[a.Unmap()] = v
	}
	return pw, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: password file: %v", ErrInvalid, err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	s = strings.TrimSuffix(s, "\r")
	if len(s) > 80 {
		return "", fmt.Errorf("%w: password file %s: TCP MD5 passwords are at most 80 bytes", ErrInvalid, path)
	}
	return s, nil
}

// Apply sets the passwords of peers. A peer that already has a password
// from the peer list or an annotation and would get one from the file too is
// a contradiction and an error.
func (pw Passwords) Apply(peers []Peer) ([]Peer, error) {
	out := append([]Peer(nil), peers...)
	for i, p := range out {
		v, own := pw.ByPeer[p.Address]
		if !own {
			v = pw.Default
		}
		if v == "" {
			continue
		}
		if p.Password != "" {
			return nil, fmt.Errorf("%w: peer %s has a password in its peer settings and in the password file; keep one", ErrInvalid, p.Address)
		}
		out[i].Password = v
	}
	return out, nil
}

// Unused returns the addresses that have a password entry but are not among
// peers, sorted (likely a typo; the caller warns).
func (pw Passwords) Unused(peers []Peer) []netip.Addr {
	var out []netip.Addr
	for a := range pw.ByPeer {
		if !slices.ContainsFunc(peers, func(p Peer) bool { return p.Address == a }) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
