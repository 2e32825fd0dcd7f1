package ccm

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSharesOnlyTheContract: vip-ccm and vip-agent share package lbsvc (and
// the pure ipam); pkg/ccm, its tests included, imports none of the agent's
// packages.
func TestSharesOnlyTheContract(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range af.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			for _, agentSide := range []string{"/pkg/agent", "/pkg/election", "/pkg/announce", "/pkg/controlplane", "/pkg/dhcp", "/pkg/upnp"} {
				if strings.HasSuffix(path, agentSide) || strings.Contains(path, agentSide+"/") {
					t.Errorf("%s imports %s: vip-ccm reaches the agent only through package lbsvc", f, path)
				}
			}
		}
	}
}
