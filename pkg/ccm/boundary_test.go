package ccm

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
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

// TestOnlyTheControllerWritesStatus: the only code of pkg/ccm that writes through a
// status subresource (Service status, and the finalizer as the stock
// controller patched it) is the service controller's.
func TestOnlyTheControllerWritesStatus(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ctrl := fn.Recv != nil && types.ExprString(fn.Recv.List[0].Type) == "*ServiceController"
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || ctrl {
					return !ctrl
				}
				writes := false
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && strings.HasSuffix(sel.Sel.Name, "Status") &&
					(strings.HasPrefix(sel.Sel.Name, "Update") || strings.HasPrefix(sel.Sel.Name, "Apply")) {
					writes = true
				}
				if len(call.Args) > 0 {
					if lit, ok := call.Args[len(call.Args)-1].(*ast.BasicLit); ok && lit.Value == `"status"` {
						writes = true
					}
				}
				if writes {
					t.Errorf("%s: %s writes status outside the service controller", fset.Position(call.Pos()), fn.Name.Name)
				}
				return true
			})
		}
	}
}
