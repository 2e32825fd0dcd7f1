// Command vip-render renders vip's deployment sources the way kustomize and
// Helm do, from their Go libraries pinned in this build module (so the main
// module does not carry them):
//
//	vip-render kustomize DIR
//	vip-render helm CHART_DIR [-f values.yaml]... [--set key=value]... [--version v] [--app-version v]
//	vip-render package CHART_DIR OUT_DIR VERSION
//
// The YAML stream goes to stdout. package writes OUT_DIR/<name>-<version>.tgz
// with version VERSION (a leading "v" dropped) and appVersion VERSION, the
// links in the chart (files/ -> deploy/) replaced by the files. The tests in deploy/ build and run it; an
// operator can use it instead of the kustomize and helm CLIs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// errUsage marks a wrong command line.
var errUsage = errors.New("usage: vip-render kustomize DIR | vip-render helm CHART_DIR [-f values.yaml]... [--set k=v]... [--version v] [--app-version v] | vip-render package CHART_DIR OUT_DIR VERSION")

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vip-render:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) < 2 {
		return errUsage
	}
	switch args[0] {
	case "kustomize":
		if len(args) != 2 {
			return errUsage
		}
		return kustomize(args[1], out)
	case "helm":
		return helm(args[1:], out)
	case "package":
		if len(args) != 4 {
			return errUsage
		}
		return pkg(args[1], args[2], args[3], out)
	}
	return errUsage
}

// kustomize renders a kustomization directory as `kustomize build` does.
func kustomize(dir string, out io.Writer) error {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return fmt.Errorf("kustomize %s: %w", dir, err)
	}
	y, err := res.AsYaml()
	if err != nil {
		return fmt.Errorf("kustomize %s: %w", dir, err)
	}
	_, err = out.Write(y)
	return err
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// helm renders a chart directory as `helm template` does (release "vip" in
// kube-system, values files merged in order, then --set), validating the
// values against the chart's values.schema.json.
func helm(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("helm", flag.ContinueOnError)
	var files, sets multiFlag
	fs.Var(&files, "f", "values file (repeatable)")
	fs.Var(&sets, "set", "key=value (repeatable)")
	version := fs.String("version", "", "override the chart version")
	appVersion := fs.String("app-version", "", "override the chart appVersion (the default image tag)")
	release := fs.String("release", "vip", "release name")
	namespace := fs.String("namespace", "kube-system", "release namespace")
	dir := args[0]
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return errUsage
	}
	chrt, err := loader.Load(dir) // a directory or a packaged .tgz
	if err != nil {
		return fmt.Errorf("loading chart %s: %w", dir, err)
	}
	if *version != "" {
		chrt.Metadata.Version = *version
	}
	if *appVersion != "" {
		chrt.Metadata.AppVersion = *appVersion
	}
	vals := map[string]any{}
	for _, f := range files {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return fmt.Errorf("values file: %w", err)
		}
		vals = chartutil.CoalesceTables(v.AsMap(), vals)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			return fmt.Errorf("--set %s: %w", s, err)
		}
	}
	opts := chartutil.ReleaseOptions{Name: *release, Namespace: *namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(chrt, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return fmt.Errorf("values: %w", err)
	}
	rendered, err := engine.Render(chrt, top)
	if err != nil {
		return fmt.Errorf("rendering %s: %w", dir, err)
	}
	names := make([]string, 0, len(rendered))
	for n, body := range rendered {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" || strings.TrimSpace(body) == "" {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := fmt.Fprintf(out, "---\n# Source: %s\n%s\n", n, strings.TrimSpace(rendered[n])); err != nil {
			return err
		}
	}
	return nil
}

// pkg packages a chart directory as `helm package --version --app-version`.
func pkg(dir, outDir, version string, out io.Writer) error {
	chrt, err := loader.Load(dir)
	if err != nil {
		return fmt.Errorf("loading chart %s: %w", dir, err)
	}
	chrt.Metadata.Version = strings.TrimPrefix(version, "v")
	chrt.Metadata.AppVersion = version
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	name, err := chartutil.Save(chrt, outDir)
	if err != nil {
		return fmt.Errorf("packaging %s: %w", dir, err)
	}
	_, err = fmt.Fprintln(out, name)
	return err
}
