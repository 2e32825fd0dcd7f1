package docs_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository, one level up from docs/.
const repoRoot = ".."

// goFiles parses every non-test Go file under pkg/, cmd/ and internal/.
func goFiles(t *testing.T) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for _, dir := range []string{"pkg", "cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(repoRoot, path)
			files[filepath.ToSlash(rel)] = f
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(files) < 20 {
		t.Fatalf("only %d Go files found under pkg/ and cmd/", len(files))
	}
	return fset, files
}

// program is the binary a source file belongs to.
func program(path string) string {
	switch {
	case strings.HasPrefix(path, "pkg/ccm/"), strings.HasPrefix(path, "cmd/vip-ccm/"), strings.HasPrefix(path, "internal/ccmapp/"):
		return "vip-ccm"
	default:
		return "vip-agent"
	}
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

func selName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.SelectorExpr:
		return x.Sel.Name
	case *ast.Ident:
		return x.Name
	}
	return ""
}

// metric is one Prometheus metric defined in the code.
type metric struct {
	name, typ, labels, help, program, pos string
}

// metricTypes maps client_golang constructors to metric types.
var metricTypes = map[string]string{
	"NewCounter": "counter", "NewCounterVec": "counter", "NewCounterFunc": "counter",
	"NewGauge": "gauge", "NewGaugeVec": "gauge", "NewGaugeFunc": "gauge",
	"NewHistogram": "histogram", "NewHistogramVec": "histogram",
	"NewSummary": "summary", "NewSummaryVec": "summary",
}

func stringList(t *testing.T, fset *token.FileSet, e ast.Expr) string {
	t.Helper()
	if id, ok := e.(*ast.Ident); ok && id.Name == "nil" {
		return ""
	}
	cl, ok := e.(*ast.CompositeLit)
	if !ok {
		t.Errorf("%s: label names must be a []string literal for docs/metrics.md", fset.Position(e.Pos()))
		return ""
	}
	var out []string
	for _, el := range cl.Elts {
		s, ok := stringLit(el)
		if !ok {
			t.Errorf("%s: label names must be string literals", fset.Position(el.Pos()))
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// metricsInCode finds every prometheus.New* call of a metric (and NewDesc,
// typed by the MustNewConstMetric call that uses it).
func metricsInCode(t *testing.T) map[string]metric {
	t.Helper()
	fset, files := goFiles(t)
	out := map[string]metric{}
	add := func(m metric) {
		if prev, ok := out[m.name]; ok && prev.pos != m.pos {
			t.Errorf("metric %s defined twice: %s and %s", m.name, prev.pos, m.pos)
		}
		out[m.name] = m
	}
	for path, f := range files {
		// Types of const metrics: desc field/variable name -> value type.
		constType := map[string]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok || len(c.Args) < 2 {
				return true
			}
			if fn := selName(c.Fun); fn == "MustNewConstMetric" || fn == "NewConstMetric" {
				switch selName(c.Args[1]) {
				case "GaugeValue":
					constType[selName(c.Args[0])] = "gauge"
				case "CounterValue":
					constType[selName(c.Args[0])] = "counter"
				default:
					constType[selName(c.Args[0])] = "untyped"
				}
			}
			return true
		})
		var descOwner string
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.KeyValueExpr:
				descOwner = selName(x.Key)
			case *ast.AssignStmt:
				if len(x.Lhs) == 1 {
					descOwner = selName(x.Lhs[0])
				}
			case *ast.CallExpr:
				sel, ok := x.Fun.(*ast.SelectorExpr)
				if !ok || selName(sel.X) != "prometheus" {
					return true
				}
				pos := fset.Position(x.Pos()).String()
				if sel.Sel.Name == "NewDesc" && len(x.Args) >= 3 {
					name, ok1 := stringLit(x.Args[0])
					help, ok2 := stringLit(x.Args[1])
					if !ok1 || !ok2 {
						t.Errorf("%s: NewDesc name and help must be string literals", pos)
						return true
					}
					typ := constType[descOwner]
					if typ == "" {
						t.Errorf("%s: cannot tell the type of %s (no MustNewConstMetric with %s in this file)", pos, name, descOwner)
					}
					add(metric{name: name, typ: typ, labels: stringList(t, fset, x.Args[2]), help: help, program: program(path), pos: pos})
					return true
				}
				typ, ok := metricTypes[sel.Sel.Name]
				if !ok || len(x.Args) == 0 {
					return true
				}
				opts, ok := x.Args[0].(*ast.CompositeLit)
				if !ok {
					t.Errorf("%s: %s options must be a composite literal for docs/metrics.md", pos, sel.Sel.Name)
					return true
				}
				var parts []string
				var name, help string
				for _, el := range opts.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					v, isLit := stringLit(kv.Value)
					switch selName(kv.Key) {
					case "Namespace", "Subsystem":
						if !isLit {
							t.Errorf("%s: %s must be a string literal", pos, selName(kv.Key))
						}
						parts = append(parts, v)
					case "Name":
						if !isLit {
							t.Errorf("%s: metric Name must be a string literal", pos)
						}
						name = v
					case "Help":
						help = v
					}
				}
				full := strings.Join(append(parts, name), "_")
				full = strings.TrimLeft(full, "_")
				labels := ""
				if strings.HasSuffix(sel.Sel.Name, "Vec") && len(x.Args) > 1 {
					labels = stringList(t, fset, x.Args[1])
				}
				add(metric{name: full, typ: typ, labels: labels, help: help, program: program(path), pos: pos})
			}
			return true
		})
	}
	if len(out) < 10 {
		t.Fatalf("only %d metrics found in the code: the scanner is broken", len(out))
	}
	return out
}

// tableRows returns the cells of every Markdown table row in file whose
// first cell is a `code` span, keyed by that span.
func tableRows(t *testing.T, file string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	first := regexp.MustCompile("^`([^`]+)`$")
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		m := first.FindStringSubmatch(cells[0])
		if m == nil {
			continue
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("%s: %s listed twice", file, m[1])
		}
		rows[m[1]] = cells
	}
	return rows
}

func unquoteCell(s string) string { return strings.ReplaceAll(s, "`", "") }

// TestMetricsDocumented: every metric of vip-ccm and vip-agent is a row of
// docs/metrics.md: | `name` | type | labels | program | meaning |.
func TestMetricsDocumented(t *testing.T) {
	code := metricsInCode(t)
	doc := tableRows(t, "metrics.md")
	names := make([]string, 0, len(code))
	for n := range code {
		names = append(names, n)
	}
	sort.Strings(names)
	var missing []string
	for _, n := range names {
		m := code[n]
		row, ok := doc[n]
		if !ok {
			missing = append(missing, fmt.Sprintf("| `%s` | %s | %s | %s | %s |", m.name, m.typ, backquote(m.labels), m.program, m.help))
			continue
		}
		if len(row) < 5 || row[1] != m.typ || unquoteCell(row[2]) != m.labels || row[3] != m.program || strings.TrimSpace(row[4]) == "" {
			t.Errorf("docs/metrics.md row for %s is %q; the code (%s) says type %s, labels %q, program %s (and the meaning must not be empty)",
				n, strings.Join(row, " | "), m.pos, m.typ, m.labels, m.program)
		}
	}
	if len(missing) > 0 {
		t.Errorf("metrics not in docs/metrics.md; add these rows (meaning from the Help text, edit as needed):\n%s", strings.Join(missing, "\n"))
	}
	for n := range doc {
		if _, ok := code[n]; !ok {
			// Not an error: a metric may be documented before its code lands.
			t.Logf("docs/metrics.md lists %s, which no code under pkg/ or cmd/ defines", n)
		}
	}
}

func backquote(labels string) string {
	if labels == "" {
		return ""
	}
	parts := strings.Split(labels, ", ")
	for i := range parts {
		parts[i] = "`" + parts[i] + "`"
	}
	return strings.Join(parts, ", ")
}

// reason is one Event reason constant.
type reason struct {
	value, ident, program, pos string
	types                      map[string]bool // Normal / Warning, where the code shows it
}

var (
	reasonIdent = regexp.MustCompile(`^[Rr]eason[A-Z]`)
	// reasonValue is the form of an Event reason: one UpperCamelCase word.
	reasonValue = regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
)

// reasonsInCode finds every constant named Reason*/reason* with a string
// value, and the Event types it is recorded with.
func reasonsInCode(t *testing.T) map[string]*reason {
	t.Helper()
	fset, files := goFiles(t)
	byIdent := map[string]*reason{}
	out := map[string]*reason{}
	for path, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if !reasonIdent.MatchString(id.Name) || i >= len(vs.Values) {
						continue
					}
					v, ok := stringLit(vs.Values[i])
					if !ok || !reasonValue.MatchString(v) {
						continue // not an Event reason (e.g. an error text)
					}
					r := &reason{value: v, ident: id.Name, program: program(path), pos: fset.Position(id.Pos()).String(), types: map[string]bool{}}
					if prev, dup := out[v]; dup && !strings.Contains(prev.program, r.program) {
						// A reason both programs give (e.g. AddressInUse: the
						// agent detects, vip-ccm acts): one row, both programs.
						progs := []string{prev.program, r.program}
						sort.Strings(progs)
						prev.program = strings.Join(progs, ", ")
						byIdent[id.Name] = prev
						continue
					}
					out[v] = r
					byIdent[id.Name] = r
				}
			}
		}
	}
	// Types: recorder.Event/Eventf(obj, v1.EventTypeX, ReasonY, ...) and
	// v1.Event{Reason: reasonY, Type: v1.EventTypeX}.
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				fn := selName(x.Fun)
				if (fn == "Event" || fn == "Eventf") && len(x.Args) >= 3 {
					if r := byIdent[selName(x.Args[2])]; r != nil {
						if typ := strings.TrimPrefix(selName(x.Args[1]), "EventType"); typ == "Normal" || typ == "Warning" {
							r.types[typ] = true
						}
					}
				}
			case *ast.CompositeLit:
				var rsn *reason
				var typ string
				for _, el := range x.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					switch selName(kv.Key) {
					case "Reason":
						rsn = byIdent[selName(kv.Value)]
					case "Type":
						typ = strings.TrimPrefix(selName(kv.Value), "EventType")
					}
				}
				if rsn != nil && (typ == "Normal" || typ == "Warning") {
					rsn.types[typ] = true
				}
			}
			return true
		})
	}
	if len(out) < 10 {
		t.Fatalf("only %d reasons found in the code: the scanner is broken", len(out))
	}
	return out
}

// TestEventsDocumented: every Event reason constant is a row of
// docs/events.md: | `Reason` | type | program | object | meaning |, with the
// type the code records it with.
func TestEventsDocumented(t *testing.T) {
	code := reasonsInCode(t)
	doc := tableRows(t, "events.md")
	values := make([]string, 0, len(code))
	for v := range code {
		values = append(values, v)
	}
	sort.Strings(values)
	var missing []string
	for _, v := range values {
		r := code[v]
		types := make([]string, 0, 2)
		for typ := range r.types {
			types = append(types, typ)
		}
		sort.Strings(types)
		row, ok := doc[v]
		if !ok {
			missing = append(missing, fmt.Sprintf("| `%s` | %s | %s | ? | ? |   (%s %s)", v, strings.Join(types, ", "), r.program, r.ident, r.pos))
			continue
		}
		if len(row) < 5 || row[2] != r.program || strings.TrimSpace(row[4]) == "" {
			t.Errorf("docs/events.md row for %s is %q; want program %s and a meaning", v, strings.Join(row, " | "), r.program)
			continue
		}
		for _, typ := range types {
			if !strings.Contains(row[1], typ) {
				t.Errorf("docs/events.md gives %s type %q, but %s records it as %s", v, row[1], r.pos, typ)
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("Event reasons not in docs/events.md; add rows | `Reason` | type | program | object | meaning |:\n%s", strings.Join(missing, "\n"))
	}
	for v := range doc {
		if _, ok := code[v]; !ok {
			t.Logf("docs/events.md lists %s, which no Reason constant under pkg/ or cmd/ has", v)
		}
	}
}

// TestScannersSeeKnownItems guards the scanners themselves: items known to
// exist must be found with their attributes.
func TestScannersSeeKnownItems(t *testing.T) {
	m := metricsInCode(t)
	for name, want := range map[string]metric{
		"vip_ccm_pool_size":                    {typ: "gauge", labels: "pool, family", program: "vip-ccm"},
		"vip_ccm_pool_used":                    {typ: "gauge", labels: "pool", program: "vip-ccm"},
		"vip_agent_reconcile_duration_seconds": {typ: "histogram", program: "vip-agent"},
		"vip_agent_bgp_session_up":             {typ: "gauge", labels: "peer", program: "vip-agent"},
	} {
		got := m[name]
		if got.typ != want.typ || got.labels != want.labels || got.program != want.program {
			t.Errorf("%s: scanned %+v, want %+v", name, got, want)
		}
	}
	r := reasonsInCode(t)
	for v, want := range map[string]string{"NoAddressAvailable": "vip-ccm", "Announcing": "vip-agent", "BGPStopped": "vip-agent"} {
		if r[v] == nil || r[v].program != want {
			t.Errorf("reason %s: scanned %+v, want program %s", v, r[v], want)
		}
	}
	if !r["BGPStopped"].types["Normal"] || !r["AddressAllocated"].types["Normal"] || !r["AnnounceFailed"].types["Warning"] {
		t.Errorf("event types not scanned: BGPStopped %v, AddressAllocated %v, AnnounceFailed %v",
			r["BGPStopped"].types, r["AddressAllocated"].types, r["AnnounceFailed"].types)
	}
}
