//go:build e2e

// Package images checks Dockerfile.ccm and Dockerfile.agent without a
// Docker engine: each file is parsed, its build stage's `go build` line is
// run exactly as written (with the ARG defaults, output redirected to a
// temporary folder), and the result must be a static binary that reports
// the version the Dockerfile stamps into it.
package images

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const repoRoot = "../.."

// stage is one FROM section of a Dockerfile.
type stage struct {
	from, name string
	args       map[string]string // ARG defaults
	runs       []string
	copies     [][]string // COPY arguments
	user       string
	entrypoint []string // ENTRYPOINT in exec (JSON) form
}

// parseDockerfile reads the instructions this project's Dockerfiles use:
// FROM, ARG, RUN, COPY, USER (others are kept out of the model). Comment
// lines are dropped and backslash continuations joined.
func parseDockerfile(text string) ([]stage, error) {
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue // blank lines and comments, also inside a continued instruction
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("dangling line continuation: %q", cur.String())
	}
	var stages []stage
	for _, l := range logical {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		if strings.ToUpper(instr) == "FROM" {
			f := strings.Fields(rest)
			s := stage{from: f[0], args: map[string]string{}}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			return nil, fmt.Errorf("%s before FROM", instr)
		}
		s := &stages[len(stages)-1]
		switch strings.ToUpper(instr) {
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			s.args[k] = v
		case "RUN":
			s.runs = append(s.runs, rest)
		case "COPY":
			s.copies = append(s.copies, strings.Fields(rest))
		case "USER":
			s.user = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &s.entrypoint); err != nil {
				return nil, fmt.Errorf("ENTRYPOINT %s: want the exec form (a JSON array): %w", rest, err)
			}
		}
	}
	return stages, nil
}

var varRef = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

// expand substitutes ARG values as the shell of a RUN line sees them.
func expand(s string, args map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		return args[name]
	})
}

// shellWords splits a command line the way sh does for plain words,
// single and double quotes.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case r == '&' || r == ';' || r == '|':
			return nil, fmt.Errorf("shell operators are not supported in the go build line: %q", s)
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// goBuild is the build stage's go build command: environment assignments,
// go's arguments, and the -o target.
type goBuild struct {
	env  []string
	args []string
	out  string
	pkg  string
}

func findGoBuild(s stage) (goBuild, error) {
	var gb goBuild
	for _, run := range s.runs {
		if !strings.Contains(run, "go build") {
			continue
		}
		words, err := shellWords(expand(run, s.args))
		if err != nil {
			return gb, err
		}
		i := 0
		for ; i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i++ {
			gb.env = append(gb.env, words[i])
		}
		if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
			return gb, fmt.Errorf("RUN %q: expected [VAR=value...] go build ...", run)
		}
		gb.args = words[i+1:]
		for j, a := range gb.args {
			if a == "-o" && j+1 < len(gb.args) {
				gb.out = gb.args[j+1]
			}
		}
		gb.pkg = gb.args[len(gb.args)-1]
		return gb, nil
	}
	return gb, fmt.Errorf("stage %q has no go build", s.name)
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/helm/vip/Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}

func TestDockerfiles(t *testing.T) {
	release := chartAppVersion(t)
	for _, tc := range []struct {
		file, program string
		nonRoot       bool
		// jsonLog makes the program write a log line and stop (it cannot
		// reach an API server): the line must be JSON.
		jsonLog []string
		// commands are the paths manifests run (kube-vip's among them):
		// each must resolve in the image's file tree to the program.
		commands []string
	}{
		{"Dockerfile.ccm", "vip-ccm", true, []string{"--logging-format=json", "--v=1", "--kubeconfig=/nonexistent/kubeconfig"},
			[]string{"/vip-ccm", "/kube-vip-cloud-provider"}},
		{"Dockerfile.agent", "vip-agent", false, []string{"--logging-format=json", "--arp", "--node-name=n1", "--lease-duration=3", "--kubeconfig=/nonexistent/kubeconfig"},
			[]string{"/vip-agent", "/kube-vip"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join(repoRoot, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			stages, err := parseDockerfile(string(text))
			if err != nil {
				t.Fatal(err)
			}
			if len(stages) < 2 {
				t.Fatalf("%d stage(s); want a build stage and a runtime stage", len(stages))
			}
			build, final := stages[0], stages[len(stages)-1]
			if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
				t.Errorf("runtime image %s; want gcr.io/distroless/static*", final.from)
			}
			fromBuild := false
			for _, c := range final.copies {
				fromBuild = fromBuild || c[0] == "--from="+build.name
			}
			if !fromBuild {
				t.Errorf("the runtime stage copies nothing from stage %q", build.name)
			}
			user := final.user
			if user == "" && strings.HasSuffix(final.from, ":nonroot") {
				user = "65532"
			}
			if nonRoot := user != "" && !strings.HasPrefix(user, "0") && !strings.HasPrefix(user, "root"); nonRoot != tc.nonRoot {
				t.Errorf("runtime user %q: non-root = %v, want %v", user, nonRoot, tc.nonRoot)
			}
			if v := build.args["VERSION"]; v != release {
				t.Errorf("ARG VERSION default %q; want the release %q (deploy/helm/vip/Chart.yaml appVersion)", v, release)
			}

			gb, err := findGoBuild(build)
			if err != nil {
				t.Fatal(err)
			}
			if !containsString(gb.env, "CGO_ENABLED=0") {
				t.Errorf("go build environment %v lacks CGO_ENABLED=0", gb.env)
			}
			if gb.out == "" {
				t.Fatalf("go build %v has no -o", gb.args)
			}
			checkCopied(t, build, gb.pkg)

			// Run the line as written, only writing the binary here.
			bin := filepath.Join(t.TempDir(), filepath.Base(gb.out))
			args := append([]string(nil), gb.args...)
			for j := range args {
				if args[j] == gb.out && j > 0 && args[j-1] == "-o" {
					args[j] = bin
				}
			}
			t.Logf("%s go %s", strings.Join(gb.env, " "), strings.Join(args, " "))
			cmd := exec.Command("nice", append([]string{"go"}, args...)...)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), gb.env...)
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			t.Logf("built in %v", time.Since(start).Round(time.Second))

			checkStatic(t, bin)
			out, err := exec.Command(bin, "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version: %v\n%s", tc.program, err, out)
			}
			if got, want := strings.TrimSpace(string(out)), tc.program+" "+release; got != want {
				t.Errorf("%s --version = %q, want %q", tc.program, got, want)
			}
			checkJSONLog(t, bin, tc.jsonLog)
			checkImageTree(t, build, final, gb.out, bin, tc.program+" "+release, append(tc.commands, final.entrypoint...))
		})
	}
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// checkCopied fails when the program imports a package of this module that
// the build stage does not COPY into the image build.
func checkCopied(t *testing.T, s stage, pkg string) {
	t.Helper()
	var dirs []string
	for _, c := range s.copies {
		if len(c) == 2 && !strings.HasPrefix(c[0], "--") && strings.HasSuffix(c[0], "/") {
			dirs = append(dirs, strings.TrimSuffix(c[0], "/"))
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", pkg)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		top, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
		if !containsString(dirs, top) {
			t.Errorf("%s needs %s, but the build stage copies only %v", pkg, rel, dirs)
		}
	}
}

// checkStatic fails unless the ELF file is static.
func checkStatic(t *testing.T, path string) {
	t.Helper()
	if err := staticELF(path); err != nil {
		t.Error(err)
	}
}

// staticELF returns an error unless the ELF file has no interpreter and
// needs no shared library.
func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s has a PT_INTERP program header: dynamically linked", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return err
	}
	if len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %v", path, libs)
	}
	return nil
}

// TestStaticELFRefusesDynamic: the check tells a dynamic executable (the
// system shell) apart.
func TestStaticELFRefusesDynamic(t *testing.T) {
	if err := staticELF("/bin/sh"); err == nil {
		t.Error("/bin/sh passed as a static binary")
	}
}

// TestParseDockerfile covers the parser on the forms it must understand
// and the ones it must refuse.
func TestParseDockerfile(t *testing.T) {
	st, err := parseDockerfile("# c\nFROM golang:1.26 AS build\nARG V=v1\n# inside\nRUN A=1 B=\"x y\" go build \\\n  -ldflags \"-X m.V=${V}\" \\\n  -o /out/p ./cmd/p\nFROM scratch\nCOPY --from=build /out/p /p\nUSER 1:1\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].name != "build" || st[1].user != "1:1" || st[0].args["V"] != "v1" {
		t.Fatalf("stages %+v", st)
	}
	gb, err := findGoBuild(st[0])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gb.env) != "[A=1 B=x y]" || gb.out != "/out/p" || gb.pkg != "./cmd/p" || !containsString(gb.args, "-X m.V=v1") {
		t.Errorf("go build %+v", gb)
	}
	for _, bad := range []string{"RUN x\n", "FROM a\nRUN go build \\\n"} {
		if _, err := parseDockerfile(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := findGoBuild(stage{runs: []string{"cd x && go build ."}}); err == nil {
		t.Error("a shell pipeline was accepted as the go build line")
	}
}

// checkJSONLog runs the program with args (it must fail to start without an
// API server) and requires its first log line on stderr to be a JSON object
// with a message: component-base's JSON format.
func checkJSONLog(t *testing.T, bin string, args []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no KUBECONFIG or in-cluster variables
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("%s %v started without an API server:\n%s", bin, args, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if _, ok := rec["msg"]; !ok {
			t.Fatalf("JSON log line without msg: %s", line)
		}
		return
	}
	t.Errorf("%s %v wrote no JSON log line:\n%s", bin, args, out)
}
