package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vip-lb/vip/pkg/testbed"
)

// helmCLI is the helm command built by `make bin/helm`, or skips the test.
func helmCLI(t *testing.T) string {
	t.Helper()
	dir, err := testbed.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.Abs(filepath.Join(dir, "helm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no helm command (make bin/helm): %v", err)
	}
	return bin
}

// TestHelmCLI: the helm command operators run lints the chart (--strict)
// and renders the same objects as the Helm library the other tests use, for
// default and custom values in both modes (the chart reads the files
// pkg/manifest renders through its links, which the command follows).
func TestHelmCLI(t *testing.T) {
	helm := helmCLI(t)
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(helm, args...)
		cmd.Dir = repoRoot
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, o.String(), e.String())
		}
		return o.Bytes()
	}
	for _, values := range [][]string{
		nil,
		{"--set", "mode=bgp"},
		{"--set", "agent.interface=eth0"},
		{"-f", "deploy/testdata/values-custom.yaml"},
		{"-f", "deploy/testdata/values-no-cloud-node.yaml"},
	} {
		name := "defaults"
		if values != nil {
			name = strings.Join(values, " ")
		}
		t.Run(name, func(t *testing.T) {
			run(append([]string{"lint", "--strict", "deploy/helm/vip"}, values...)...)
			got := objects(t, run(append([]string{"template", "vip", "deploy/helm/vip"}, values...)...))
			want := objects(t, render(t, append([]string{"helm", "deploy/helm/vip"}, values...)...))
			// Each rendering draws its own heartbeat key.
			maskLinkKey(t, got)
			maskLinkKey(t, want)
			sameObjects(t, "helm template "+name, got, "vip-render helm "+name, want)
		})
	}
}
