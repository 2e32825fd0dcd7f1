//go:build e2e

package images

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// checkImageTree rebuilds the runtime image's file tree without a Docker
// engine: the build stage's output (the binary at out, plus what its `ln`
// lines make) is laid out in a build folder, the runtime stage's
// COPY --from lines copy from it into a root folder, and every command path
// must then resolve inside that root (symbolic links followed within it) to
// an executable that prints version.
func checkImageTree(t *testing.T, build, final stage, out, bin, version string, commands []string) {
	t.Helper()
	buildfs, rootfs := t.TempDir(), t.TempDir()
	if err := copyFile(bin, filepath.Join(buildfs, out)); err != nil {
		t.Fatal(err)
	}
	for _, run := range build.runs {
		w, err := shellWords(expand(run, build.args))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(run, "go build") || (len(w) > 1 && w[0] == "go" && w[1] == "mod"):
		case len(w) > 0 && w[0] == "ln":
			if err := runLn(buildfs, w[1:]); err != nil {
				t.Fatalf("RUN %s: %v", run, err)
			}
		default:
			t.Fatalf("RUN %q: the image tree model knows go and ln lines only", run)
		}
	}
	for _, c := range final.copies {
		if len(c) != 3 || c[0] != "--from="+build.name {
			continue
		}
		if err := copyInto(filepath.Join(buildfs, c[1]), rootfs, c[1], c[2]); err != nil {
			t.Fatalf("COPY %s: %v", strings.Join(c, " "), err)
		}
	}
	if len(commands) == 0 {
		t.Fatal("no command paths to check")
	}
	for _, cmd := range commands {
		real, err := resolveIn(rootfs, cmd)
		if err != nil {
			t.Errorf("%s in the image: %v", cmd, err)
			continue
		}
		got, err := exec.Command(real, "--version").CombinedOutput()
		if err != nil || strings.TrimSpace(string(got)) != version {
			t.Errorf("%s (%s) --version = %q, %v; want %q", cmd, strings.TrimPrefix(real, rootfs), got, err, version)
		}
	}
}

// runLn performs `ln [-s] [-f] TARGET LINK` with LINK under root.
func runLn(root string, args []string) error {
	sym := false
	var rest []string
	for _, a := range args {
		switch a {
		case "-s":
			sym = true
		case "-f", "-sf", "-fs":
			sym = sym || a != "-f"
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) != 2 || !path.IsAbs(rest[1]) {
		return fmt.Errorf("want ln [-s] TARGET /ABSOLUTE/LINK, got %q", args)
	}
	link := filepath.Join(root, rest[1])
	if sym {
		return os.Symlink(rest[0], link)
	}
	target := rest[0]
	if !path.IsAbs(target) {
		target = path.Join(path.Dir(rest[1]), target)
	}
	return os.Link(filepath.Join(root, target), link)
}

// copyInto does what COPY does for a file or, with a trailing slash, a
// folder's contents: symbolic links are copied as links.
func copyInto(src, rootfs, srcArg, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		to := filepath.Join(rootfs, dst)
		if strings.HasSuffix(dst, "/") {
			to = filepath.Join(to, filepath.Base(srcArg))
		}
		return copyEntry(src, to)
	}
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(rootfs, dst, rel)
		if info.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		return copyEntry(p, to)
	})
}

func copyEntry(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	return copyFile(src, dst)
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// resolveIn follows p inside root the way the kernel would inside the
// container, and returns the host path of the executable it names.
func resolveIn(root, p string) (string, error) {
	for range 40 {
		host := filepath.Join(root, p)
		st, err := os.Lstat(host)
		if err != nil {
			return "", fmt.Errorf("not in the image: %w", err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(host)
			if err != nil {
				return "", err
			}
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = target
			continue
		}
		if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is not an executable file (%v)", p, st.Mode())
		}
		return host, nil
	}
	return "", fmt.Errorf("too many symbolic links")
}

// TestImageTreeModel: the model follows links inside the root only and
// tells a missing command apart.
func TestImageTreeModel(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "prog"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := runLn(root, []string{"-s", "prog", "/alias"}); err != nil {
		t.Fatal(err)
	}
	if err := runLn(root, []string{"-s", "/prog", "/abs"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/prog", "/alias", "/abs"} {
		if got, err := resolveIn(root, p); err != nil || got != filepath.Join(root, "prog") {
			t.Errorf("%s -> %q, %v", p, got, err)
		}
	}
	if _, err := resolveIn(root, "/missing"); err == nil {
		t.Error("a missing command resolved")
	}
	if err := runLn(root, []string{"-s", "missing", "/dangling"}); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveIn(root, "/dangling"); err == nil {
		t.Error("a dangling link resolved")
	}
}
