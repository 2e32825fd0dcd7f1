package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrTaken is returned by Up and KubeadmUp when a host-wide name the lab
// needs (a network namespace, a cgroup, a file at a fixed place) exists
// already: another lab uses it, or an earlier run left it behind. The lab
// then starts nothing, and its teardown never removes what it did not make.
var ErrTaken = errors.New("cluster: names the lab needs are taken")

// agentStateDir is where the DaemonSet's vip-agent keeps its state file,
// /run/vip-agent/<node>.json (a hostPath on the machine for the process
// cluster's nodes, which share the host's mount namespace).
const agentStateDir = "/run/vip-agent"

// claim is something a lab creates at a fixed, machine-wide place.
type claim struct {
	What string // "namespace", "cgroup", "file"
	Name string
	Path string // what must not exist yet
}

func namespaceClaim(name string) claim {
	return claim{What: "namespace", Name: name, Path: netnsPath(name)}
}

// cgroupClaims are cgroup root name in every hierarchy.
func cgroupClaims(name string, hierarchies []string) []claim {
	var cs []claim
	for _, h := range hierarchies {
		cs = append(cs, claim{What: "cgroup", Name: "/" + name, Path: filepath.Join(h, name)})
	}
	return cs
}

// agentStateFiles are the state files the agents of the named nodes write
// on the host, with their temporary twins.
func agentStateFiles(nodes []string) []string {
	var fs []string
	for _, n := range nodes {
		p := filepath.Join(agentStateDir, n+".json")
		fs = append(fs, p, p+".tmp")
	}
	return fs
}

// TakenError lists the claims found taken.
type TakenError struct{ Taken []claim }

func (e *TakenError) Error() string {
	var b strings.Builder
	b.WriteString("cluster: these names the lab needs exist already, so it starts nothing and will not remove them:")
	for _, c := range e.Taken {
		fmt.Fprintf(&b, "\n  %s %s (%s)", c.What, c.Name, c.Path)
	}
	b.WriteString("\nAnother lab may be using them (make cluster, make cluster-test and make cluster-kubeadm-test" +
		" each run once per machine). If they are an earlier run's leftovers: make cluster-down, or remove them by hand" +
		" (ip netns delete NAME; rmdir the cgroup folder in every hierarchy; rm the file).")
	return b.String()
}

func (e *TakenError) Unwrap() error { return ErrTaken }

// checkFree returns a *TakenError naming every claim whose path exists
// (exists is os.Lstat's verdict; a test passes its own).
func checkFree(claims []claim, exists func(path string) bool) error {
	var taken []claim
	for _, c := range claims {
		if exists(c.Path) {
			taken = append(taken, c)
		}
	}
	if len(taken) > 0 {
		return &TakenError{Taken: taken}
	}
	return nil
}

// pathExists says whether anything (even a dangling link) is at p.
func pathExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// labClaims are what a lab with these namespaces and node cgroups will
// create, plus the agents' state files on the host (files).
func labClaims(namespaces, cgroups, files []string) ([]claim, error) {
	var cs []claim
	for _, n := range namespaces {
		cs = append(cs, namespaceClaim(n))
	}
	if len(cgroups) > 0 {
		hs, err := cgroupHierarchies()
		if err != nil {
			return nil, err
		}
		for _, n := range cgroups {
			cs = append(cs, cgroupClaims(n, hs)...)
		}
	}
	for _, f := range files {
		cs = append(cs, claim{What: "file", Name: filepath.Base(f), Path: f})
	}
	return cs, nil
}

// clusterNamespaces are the namespaces Up makes for a cluster of n nodes
// (the BGP router's, RouterNS, is made later and checked then).
func clusterNamespaces(n int) []string {
	ns := []string{SwitchNS, CPNS, ClientNS}
	ns = append(ns, clusterNodes(n)...)
	return append(ns, ExtNS)
}

func clusterNodes(n int) []string {
	var ns []string
	for i := 1; i <= n; i++ {
		ns = append(ns, NodeName(i))
	}
	return ns
}

// folderClaim is the cluster folder when it exists and holds something:
// Down removes the folder, so it must be the lab's own (an empty or absent
// one is).
func folderClaim(dir string) []claim {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return nil
	}
	return []claim{{What: "folder (not empty)", Name: dir, Path: dir}}
}
