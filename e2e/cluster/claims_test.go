package cluster

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCheckFree(t *testing.T) {
	dir := t.TempDir()
	taken := filepath.Join(dir, "taken")
	if err := os.WriteFile(taken, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	free := filepath.Join(dir, "free")
	for _, tc := range []struct {
		name   string
		claims []claim
		taken  []string // names reported
	}{
		{"none", nil, nil},
		{"all free", []claim{{"namespace", "a", free}}, nil},
		{"one taken", []claim{{"namespace", "a", free}, {"cgroup", "/b", taken}}, []string{"/b"}},
		{"dangling link counts", []claim{{"file", "c", dangling}}, []string{"c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkFree(tc.claims, pathExists)
			if tc.taken == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrTaken) {
				t.Fatalf("got %v, want ErrTaken", err)
			}
			var te *TakenError
			if !errors.As(err, &te) {
				t.Fatalf("got %T, want *TakenError", err)
			}
			var names []string
			for _, c := range te.Taken {
				names = append(names, c.Name)
				if !strings.Contains(err.Error(), c.Path) {
					t.Errorf("message does not name %s: %v", c.Path, err)
				}
			}
			if !slices.Equal(names, tc.taken) {
				t.Errorf("taken %v, want %v", names, tc.taken)
			}
			if !strings.Contains(err.Error(), "will not remove them") {
				t.Errorf("message does not say the names are left alone: %v", err)
			}
		})
	}
}

func TestLabClaimNames(t *testing.T) {
	ns := clusterNamespaces(3)
	for _, want := range []string{SwitchNS, CPNS, ClientNS, ExtNS, "vcl-n1", "vcl-n2", "vcl-n3"} {
		if !slices.Contains(ns, want) {
			t.Errorf("cluster namespaces %v lack %s", ns, want)
		}
	}
	kns := kubeadmNamespaces(3)
	for _, want := range []string{KubeadmSwitchNS, KubeadmClientNS, "vka-c1", "vka-c2", "vka-c3"} {
		if !slices.Contains(kns, want) {
			t.Errorf("kubeadm namespaces %v lack %s", kns, want)
		}
	}
	for _, n := range ns {
		if slices.Contains(kns, n) {
			t.Errorf("both labs use namespace %s", n)
		}
	}
	files := agentStateFiles([]string{"vcl-n1"})
	if !slices.Equal(files, []string{"/run/vip-agent/vcl-n1.json", "/run/vip-agent/vcl-n1.json.tmp"}) {
		t.Errorf("agent state files %v", files)
	}
	cs := cgroupClaims("vcl-n1", []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"})
	if len(cs) != 2 || cs[0].Path != "/sys/fs/cgroup/pids/vcl-n1" || cs[1].Name != "/vcl-n1" {
		t.Errorf("cgroup claims %+v", cs)
	}
}

func TestFolderClaim(t *testing.T) {
	dir := t.TempDir()
	if c := folderClaim(filepath.Join(dir, "absent")); c != nil {
		t.Errorf("absent folder claimed taken: %v", c)
	}
	if c := folderClaim(dir); c != nil {
		t.Errorf("empty folder claimed taken: %v", c)
	}
	if err := os.WriteFile(filepath.Join(dir, "mine"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c := folderClaim(dir); len(c) != 1 {
		t.Errorf("folder with a file not claimed taken: %v", c)
	}
}

// Down removes the host files the state records and nothing beside them.
func TestDownRemovesOnlyRecordedHostFiles(t *testing.T) {
	host := t.TempDir()
	mine := filepath.Join(host, "vcl-n1.json")
	other := filepath.Join(host, "vcl-n9.json") // another lab's, not recorded
	for _, f := range []string{mine, other} {
		if err := os.WriteFile(f, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st := &State{Dir: filepath.Join(t.TempDir(), "cluster"),
		HostFiles: []string{mine, filepath.Join(host, "vcl-n2.json")}} // n2's never written
	if err := os.MkdirAll(st.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := st.Down(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mine); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("recorded file left: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("file not recorded was removed: %v", err)
	}
	if _, err := os.Stat(host); err != nil {
		t.Errorf("the folder of the files was removed: %v", err)
	}
}

// takeNamespace makes netns name for the test (skipping when it exists: a
// lab is running) and deletes it in cleanup.
func takeNamespace(t *testing.T, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if pathExists(netnsPath(name)) {
		t.Skipf("namespace %s exists (a lab is running)", name)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
}

// addNamespace refuses a namespace that exists, records nothing, and Down
// leaves it alone.
func TestAddNamespaceRefusesTaken(t *testing.T) {
	name := Prefix + "-taken-test"
	takeNamespace(t, name)
	st := &State{Dir: filepath.Join(t.TempDir(), "cluster")}
	if err := os.MkdirAll(st.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := st.addNamespace(name)
	if !errors.Is(err, ErrTaken) {
		t.Fatalf("addNamespace of an existing namespace: got %v, want ErrTaken", err)
	}
	if len(st.Namespaces) != 0 {
		t.Errorf("recorded %v", st.Namespaces)
	}
	if err := st.Down(); err != nil {
		t.Fatal(err)
	}
	if !pathExists(netnsPath(name)) {
		t.Errorf("Down deleted namespace %s it did not make", name)
	}
}

// Up and KubeadmUp fail at once when one of their namespaces exists, make
// nothing, and leave it alone.
func TestUpRefusesTakenNamespace(t *testing.T) {
	for _, tc := range []struct {
		name, taken string
		others      []string
		up          func(ctx context.Context, cfg Config) error
	}{
		{"cluster", NodeName(2), clusterNamespaces(3), func(ctx context.Context, cfg Config) error {
			_, err := Up(ctx, cfg)
			return err
		}},
		{"kubeadm", KubeadmNodeName(2), kubeadmNamespaces(3), func(ctx context.Context, cfg Config) error {
			_, err := KubeadmUp(ctx, cfg)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range tc.others {
				if pathExists(netnsPath(n)) {
					t.Skipf("namespace %s exists (a lab is running)", n)
				}
			}
			takeNamespace(t, tc.taken)
			cfg := Config{Dir: filepath.Join(t.TempDir(), "lab"), Logf: t.Logf}
			check := cfg.Check
			if tc.name == "kubeadm" {
				check = func() error {
					kc, err := KubeadmDefaults(cfg)
					if err != nil {
						return err
					}
					return KubeadmCheck(kc)
				}
			}
			if err := check(); err != nil {
				t.Skipf("the machine cannot run the lab: %v", err)
			}
			err := tc.up(context.Background(), cfg)
			if !errors.Is(err, ErrTaken) {
				t.Fatalf("got %v, want ErrTaken", err)
			}
			if !strings.Contains(err.Error(), tc.taken) {
				t.Errorf("error does not name %s: %v", tc.taken, err)
			}
			t.Logf("Up: %v", err)
			if !pathExists(netnsPath(tc.taken)) {
				t.Errorf("namespace %s, made before Up, is gone", tc.taken)
			}
			for _, n := range tc.others {
				if n != tc.taken && pathExists(netnsPath(n)) {
					t.Errorf("Up made namespace %s although it failed", n)
				}
			}
			if pathExists(cfg.Dir) {
				t.Errorf("Up made its folder %s although it failed", cfg.Dir)
			}
		})
	}
}
