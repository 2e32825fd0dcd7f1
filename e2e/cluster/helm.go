package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HelmRelease is the release name the lab installs deploy/helm/vip as.
const HelmRelease = "vip"

// Helm runs BinDir/helm (make bin/helm) with the lab kubeconfig in the
// client namespace, its cache, config and data folders in the cluster
// folder, and returns its combined output.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	bin := filepath.Join(c.st.BinDir, "helm")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w (make bin/helm)", err)
	}
	home := filepath.Join(c.st.Dir, "helm")
	full := append([]string{"--net=" + netnsPath(ClientNS), "--", bin, "--kubeconfig", c.LabKubeconfig()}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// InstallVIPHelm installs the chart deploy/helm/vip as a user does, with
// only the images and the pool set to the lab's, and waits until vip-ccm
// is available, vip-agent ready on every node and no node tainted.
func (c *Cluster) InstallVIPHelm(ctx context.Context) error {
	chart := filepath.Join(c.st.RepoDir, "deploy", "helm", "vip")
	if _, err := c.Helm(ctx, "install", HelmRelease, chart, "--namespace", "kube-system",
		"--set", "ccm.image.repository="+ImageRepo+"/vip-ccm", "--set-string", "ccm.image.tag="+ImageTag,
		"--set", "agent.image.repository="+ImageRepo+"/vip-agent", "--set-string", "agent.image.tag="+ImageTag,
		"--set-string", "pools.range-global="+PoolRange); err != nil {
		return err
	}
	return c.WaitVIP(ctx)
}
