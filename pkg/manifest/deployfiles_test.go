package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDeployFilesAreRendered keeps the committed files under deploy/ that
// this package renders equal to the rendering, byte for byte: the Go code is
// their only source. `make manifests` (go test -update) rewrites them.
func TestDeployFilesAreRendered(t *testing.T) {
	files, err := DeployFiles()
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range files {
		path := filepath.Join("..", "..", filepath.FromSlash(name))
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run make manifests)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from its rendering by pkg/manifest; edit the Go code, not the file, and run make manifests:\n%s", name, got)
		}
		if name == AgentBGPPatchFile || name == AgentLinkPatchFile {
			// A strategic merge patch ($patch: delete) is no object.
			var patch map[string]any
			if err := yaml.UnmarshalStrict(got, &patch); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		decodeStrict(t, got)
	}
}
