package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// State is what a running cluster is made of; it is saved after every step
// so that Down can undo a cluster that came up only in part.
type State struct {
	Dir        string      `json:"dir"`
	BinDir     string      `json:"binDir"`
	RepoDir    string      `json:"repoDir"`
	ProxyMode  string      `json:"proxyMode"`
	Namespaces []string    `json:"namespaces"`
	Nodes      []NodeState `json:"nodes"`
	Control    []Proc      `json:"control"` // etcd, kube-apiserver, kube-controller-manager, kube-scheduler, forwarder
	Cgroups    []string    `json:"cgroups"` // cgroup roots created (per node), e.g. /vcl-n1
	// HostPaths are folders outside Dir that did not exist before the
	// cluster and that kubelet creates at fixed places.
	HostPaths []string `json:"hostPaths"`
	// HostFiles are files outside Dir that did not exist before the
	// cluster and that its programs create at fixed places (vip-agent's
	// /run/vip-agent/<node>.json); Down removes exactly these.
	HostFiles []string `json:"hostFiles,omitempty"`

	mu sync.Mutex
}

// NodeState is one node's processes and folders.
type NodeState struct {
	Name       string `json:"name"`
	IP         string `json:"ip"`
	PodCIDR    string `json:"podCIDR"`
	Dir        string `json:"dir"`
	Containerd Proc   `json:"containerd"`
	Kubelet    Proc   `json:"kubelet"`
	KubeProxy  Proc   `json:"kubeProxy"`
}

// Socket is the node's containerd socket.
func (n NodeState) Socket() string { return filepath.Join(n.Dir, "state", "containerd.sock") }

func (s *State) path() string { return filepath.Join(s.Dir, stateFile) }

// save writes the state file atomically.
func (s *State) save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return os.Rename(tmp, s.path())
}

// Load reads the state of the cluster in dir; os.ErrNotExist when there is
// none.
func Load(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	s := &State{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("state %s: %w", dir, err)
	}
	return s, nil
}

// node returns the state of the named node.
func (s *State) node(name string) (*NodeState, error) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i], nil
		}
	}
	return nil, fmt.Errorf("cluster: no node %q", name)
}
