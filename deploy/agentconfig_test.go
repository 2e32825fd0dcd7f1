package deploy_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	progOnce sync.Once
	progDir  string
	progErr  error
)

// program builds cmd/vip-agent and cmd/vip-ccm once per test binary and
// returns the path of one.
func program(t *testing.T, name string) string {
	t.Helper()
	progOnce.Do(func() {
		progDir, progErr = os.MkdirTemp("", "vip-programs-")
		if progErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", progDir+"/", "./cmd/vip-agent", "./cmd/vip-ccm")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			progErr = fmt.Errorf("building vip-agent and vip-ccm: %v\n%s", err, out)
		}
	})
	if progErr != nil {
		t.Fatal(progErr)
	}
	return filepath.Join(progDir, name)
}

// fieldRefValues stand in for what the kubelet fills in.
var fieldRefValues = map[string]string{"spec.nodeName": "node-1", "status.hostIP": "10.0.0.11"}

// TestAgentAcceptsRenderedConfig starts the real vip-agent with the
// arguments and environment of every rendered DaemonSet (ConfigMap
// variables included, the BGP password Secret as the mounted folder): its
// configuration check must pass, so it stops only because no API server is
// reachable. A setting the agent refuses, e.g. a BGP variable it does not
// know, fails here.
func TestAgentAcceptsRenderedConfig(t *testing.T) {
	bin := program(t, "vip-agent")
	for name, data := range renderings(t) {
		t.Run(name, func(t *testing.T) {
			m := objects(t, data)
			ds := m["DaemonSet kube-system/vip-agent"]
			if ds == nil {
				t.Fatalf("no DaemonSet vip-agent")
			}
			c := dig(t, ds, "spec", "template", "spec", "containers", 0).(map[string]any)
			// Mounted Secrets become folders of files.
			mounts := map[string]string{}
			if vols, ok := dig(t, ds, "spec", "template", "spec", "volumes").([]any); ok {
				for _, v := range vols {
					vm := v.(map[string]any)
					sec, ok := vm["secret"].(map[string]any)
					if !ok {
						continue
					}
					dir := t.TempDir()
					if s := m[fmt.Sprintf("Secret kube-system/%v", sec["secretName"])]; s != nil {
						data, _ := s["data"].(map[string]any)
						for k, v := range data {
							b, err := base64.StdEncoding.DecodeString(v.(string))
							if err != nil {
								t.Fatal(err)
							}
							if err := os.WriteFile(filepath.Join(dir, k), b, 0o400); err != nil {
								t.Fatal(err)
							}
						}
					}
					mounts[fmt.Sprint(vm["name"])] = dir
				}
			}
			var args []string
			for _, a := range c["args"].([]any) {
				args = append(args, fmt.Sprint(a))
			}
			if vms, ok := c["volumeMounts"].([]any); ok {
				for _, v := range vms {
					vm := v.(map[string]any)
					if dir, ok := mounts[fmt.Sprint(vm["name"])]; ok {
						for i := range args {
							args[i] = strings.ReplaceAll(args[i], fmt.Sprint(vm["mountPath"]), dir)
						}
					}
				}
			}
			env := []string{"PATH=/usr/bin:/bin", "KUBECONFIG=/nonexistent/kubeconfig"}
			if envFrom, ok := c["envFrom"].([]any); ok {
				for _, ef := range envFrom {
					ref := ef.(map[string]any)["configMapRef"].(map[string]any)
					cm := m[fmt.Sprintf("ConfigMap kube-system/%v", ref["name"])]
					if cm == nil {
						t.Fatalf("envFrom names ConfigMap %v, which is not rendered", ref["name"])
					}
					for k, v := range cm["data"].(map[string]any) {
						env = append(env, k+"="+fmt.Sprint(v))
					}
				}
			}
			for _, e := range c["env"].([]any) {
				em := e.(map[string]any)
				v, ok := em["value"]
				if !ok {
					path := fmt.Sprint(dig(t, em, "valueFrom", "fieldRef", "fieldPath"))
					if v, ok = fieldRefValues[path]; !ok {
						t.Fatalf("env %v from %s: no stand-in value", em["name"], path)
					}
				}
				env = append(env, fmt.Sprintf("%v=%v", em["name"], v))
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("vip-agent %v started without an API server:\n%s", args, out)
			}
			if !strings.Contains(string(out), "Kubernetes client") {
				t.Errorf("vip-agent %v with env %v refused its configuration:\n%s", args, env, out)
			}
		})
	}
}

// TestCCMAcceptsRenderedArgs starts the real vip-ccm with the arguments of
// every rendered Deployment: it must get past flag parsing and stop only
// because its kubeconfig does not exist.
func TestCCMAcceptsRenderedArgs(t *testing.T) {
	bin := program(t, "vip-ccm")
	for name, data := range renderings(t) {
		t.Run(name, func(t *testing.T) {
			d := objects(t, data)["Deployment kube-system/vip-ccm"]
			if d == nil {
				t.Fatalf("no Deployment vip-ccm")
			}
			var args []string
			for _, a := range dig(t, d, "spec", "template", "spec", "containers", 0, "args").([]any) {
				args = append(args, fmt.Sprint(a))
			}
			args = append(args, "--kubeconfig=/nonexistent/kubeconfig")
			cmd := exec.Command(bin, args...)
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("vip-ccm %v started without a kubeconfig:\n%s", args, out)
			}
			if !strings.Contains(string(out), "/nonexistent/kubeconfig: no such file") || strings.Contains(string(out), "unknown flag") {
				t.Errorf("vip-ccm %v refused its arguments:\n%s", args, out)
			}
		})
	}
}
