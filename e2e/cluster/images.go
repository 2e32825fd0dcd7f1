package cluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Images of the lab, built without Docker.
var (
	PauseImage  = ImageRepo + "/pause:" + ImageTag  // the pods' sandbox (labpod pause)
	LabpodImage = ImageRepo + "/labpod:" + ImageTag // the HTTP workload (labpod serve)
	CCMImage    = ImageRepo + "/vip-ccm:" + ImageTag
	AgentImage  = ImageRepo + "/vip-agent:" + ImageTag
)

// Image is one image to pack: a static binary at /<name>, an entrypoint, a
// user.
type Image struct {
	Ref        string
	Binary     string // host path
	Path       string // path inside the image
	Entrypoint []string
	Cmd        []string
	User       string
	Links      map[string]string // symbolic links in the image: path -> target
	// Host are files copied from the host to the same path, with the
	// shared libraries ldd lists for them (dynamically linked tools).
	Host []string
	// Files are further files: image path -> host file.
	Files map[string]string
}

// dockerStage is what the image build needs from a Dockerfile.
type dockerStage struct {
	buildLine  string // the RUN line with `go build`
	args       map[string]string
	out        string            // -o path of the build line
	copyTo     string            // where the final stage's COPY --from puts the binary
	links      map[string]string // symbolic links the build stage makes beside the binary (name -> target)
	linkDir    string            // where the final stage's COPY puts them
	entrypoint []string
	user       string
}

var outFlag = regexp.MustCompile(`-o\s+(\S+)`)

// parseDockerfile reads the build line (from any stage), the ARG defaults,
// and the final stage's COPY destination, ENTRYPOINT and USER.
func parseDockerfile(text string) (dockerStage, error) {
	var st dockerStage
	st.args = map[string]string{}
	st.links = map[string]string{}
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			st.user = "" // USER is per stage; the final one counts
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			st.args[k] = v
		case "RUN":
			if strings.Contains(rest, "go build") {
				st.buildLine = rest
				if m := outFlag.FindStringSubmatch(rest); m != nil {
					st.out = m[1]
				}
			}
			// RUN ln -s <target> <dir of the binary>/<name>
			if f := strings.Fields(rest); len(f) == 4 && f[0] == "ln" && f[1] == "-s" && st.out != "" &&
				filepath.Dir(f[3]) == filepath.Dir(st.out) {
				st.links[filepath.Base(f[3])] = f[2]
			}
		case "COPY":
			f := strings.Fields(rest)
			if len(f) != 3 || !strings.HasPrefix(f[0], "--from=") || st.out == "" {
				break
			}
			switch strings.TrimSuffix(f[1], "/") {
			case st.out: // the binary itself
				st.copyTo = f[2]
			case filepath.Dir(st.out): // the whole output folder
				st.copyTo = filepath.Join(f[2], filepath.Base(st.out))
				st.linkDir = f[2]
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &st.entrypoint); err != nil {
				return st, fmt.Errorf("ENTRYPOINT %s: %w", rest, err)
			}
		case "USER":
			st.user = rest
		}
	}
	if st.buildLine == "" || st.out == "" || st.copyTo == "" || len(st.entrypoint) == 0 {
		return st, fmt.Errorf("dockerfile: build line %q, output %q, copy %q, entrypoint %v: incomplete",
			st.buildLine, st.out, st.copyTo, st.entrypoint)
	}
	return st, nil
}

// buildFromDockerfile runs the Dockerfile's `go build` line as written (ARG
// defaults substituted, output redirected into outDir) in repo and returns
// the image to pack.
func buildFromDockerfile(repo, dockerfile, outDir, ref string) (Image, error) {
	b, err := os.ReadFile(filepath.Join(repo, dockerfile))
	if err != nil {
		return Image{}, err
	}
	st, err := parseDockerfile(string(b))
	if err != nil {
		return Image{}, fmt.Errorf("%s: %w", dockerfile, err)
	}
	bin := filepath.Join(outDir, filepath.Base(st.out))
	line := strings.Replace(st.buildLine, st.out, bin, 1)
	for k, v := range st.args {
		line = strings.ReplaceAll(line, "${"+k+"}", v)
		line = strings.ReplaceAll(line, "$"+k, v)
	}
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return Image{}, fmt.Errorf("%s: %s: %w\n%s", dockerfile, line, err, out)
	}
	img := Image{Ref: ref, Binary: bin, Path: st.copyTo, Entrypoint: st.entrypoint, User: st.user}
	if st.linkDir != "" {
		img.Links = map[string]string{}
		for name, target := range st.links {
			img.Links[filepath.Join(st.linkDir, name)] = target
		}
	}
	return img, nil
}

// buildLabpod builds e2e/cmd/labpod, static.
func buildLabpod(repo, outDir string) (string, error) {
	bin := filepath.Join(outDir, "labpod")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./e2e/cmd/labpod")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build labpod: %w\n%s", err, out)
	}
	return bin, nil
}

// passwd and group give the images root and the distroless nonroot user.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// layerTar packs the binary, /etc/passwd, /etc/group and /tmp.
func layerTar(img Image) ([]byte, error) {
	bin, err := os.ReadFile(img.Binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(0, 0)
	dirs := []struct {
		name string
		mode int64
	}{{"etc/", 0o755}, {"tmp/", 0o1777}, {"home/", 0o755}, {"home/nonroot/", 0o700}}
	for _, d := range dirs {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: mt}
		if d.name == "home/nonroot/" {
			h.Uid, h.Gid = 65532, 65532
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/passwd", 0o644, []byte(passwd)}, {"etc/group", 0o644, []byte(group)},
		{strings.TrimPrefix(img.Path, "/"), 0o755, bin},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode,
			Size: int64(len(f.data)), ModTime: mt}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	host, err := withLibraries(img.Host)
	if err != nil {
		return nil, err
	}
	type copyFile struct{ src, dst string }
	var copies []copyFile
	for _, p := range host {
		copies = append(copies, copyFile{p, p})
	}
	extra := make([]string, 0, len(img.Files))
	for dst := range img.Files {
		extra = append(extra, dst)
	}
	sort.Strings(extra)
	for _, dst := range extra {
		copies = append(copies, copyFile{img.Files[dst], dst})
	}
	dirsDone := map[string]bool{"etc": true, "tmp": true, "home": true}
	for _, cf := range copies {
		b, err := os.ReadFile(cf.src)
		if err != nil {
			return nil, err
		}
		rel := strings.TrimPrefix(cf.dst, "/")
		var parents []string
		for d := filepath.Dir(rel); d != "." && !dirsDone[d]; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
			dirsDone[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mt}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o755,
			Size: int64(len(b)), ModTime: mt}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(img.Links))
	for p := range img.Links {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(p, "/"),
			Linkname: img.Links[p], Mode: 0o777, ModTime: mt}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// WriteArchive writes img as a docker-archive tarball (what `docker save`
// writes and `ctr images import` reads) to path.
func WriteArchive(img Image, path string) error {
	layer, err := layerTar(img)
	if err != nil {
		return err
	}
	layerID := sha(layer)
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{
			"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "User": img.User, "WorkingDir": "/",
			"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
		"history": []map[string]any{{"created_by": "vip cluster lab: " + filepath.Base(img.Binary)}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgName := sha(cfgJSON) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": cfgName, "RepoTags": []string{img.Ref}, "Layers": []string{layerID + "/layer.tar"},
	}})
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{cfgName, cfgJSON}, {layerID + "/layer.tar", layer}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644,
			Size: int64(len(e.data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, bytes.NewReader(e.data)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// Upstream's e2e images, stood in for by local builds (the lab reaches no
// registry): agnhost from the pinned module (bin/agnhost, optional) with
// busybox, curl and OpenBSD nc from the host for the suites' exec pods, and
// labpod as wget (Debian 12's busybox wget, static or not, dies of SIGSEGV
// on the -T the suites pass); the lab's pause under upstream's pause name.
const (
	UpstreamAgnhost = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	UpstreamPause   = "registry.k8s.io/pause:3.10.2"
)

// busyboxApplets become links to /bin/busybox in the agnhost image.
var busyboxApplets = []string{"sh", "ash", "cat", "echo", "ls", "sleep", "hostname", "grep", "sed", "awk", "head",
	"tail", "timeout", "ps", "date", "true", "false", "test", "env", "nslookup", "ping", "mkdir", "rm", "cut",
	"tr", "wc", "seq", "ip"}

// agnhostImage is upstream's agnhost image made from bin/agnhost, with
// labpod (static) as /bin/wget.
func agnhostImage(bin, labpod string) Image {
	img := Image{Ref: UpstreamAgnhost, Binary: bin, Path: "/agnhost", Entrypoint: []string{"/agnhost"},
		Host:  []string{"/bin/busybox", "/usr/bin/curl", "/bin/nc.openbsd"},
		Files: map[string]string{"/bin/labpod": labpod},
		Links: map[string]string{"/bin/nc": "nc.openbsd", "/bin/wget": "labpod"}}
	for _, a := range busyboxApplets {
		img.Links["/bin/"+a] = "busybox"
	}
	return img
}

// buildImages builds the lab images into dir and returns the tarballs:
// pause, labpod, vip-ccm, vip-agent, and upstream's agnhost and pause when
// binDir has agnhost.
func buildImages(repo, binDir, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	labpod, err := buildLabpod(repo, dir)
	if err != nil {
		return nil, err
	}
	imgs := []Image{
		{Ref: PauseImage, Binary: labpod, Path: "/labpod", Entrypoint: []string{"/labpod", "pause"}},
		{Ref: LabpodImage, Binary: labpod, Path: "/labpod", Entrypoint: []string{"/labpod"}, Cmd: []string{"serve"}, User: "65532:65532"},
	}
	if _, err := os.Stat(filepath.Join(binDir, "agnhost")); err == nil {
		imgs = append(imgs, agnhostImage(filepath.Join(binDir, "agnhost"), labpod),
			Image{Ref: UpstreamPause, Binary: labpod, Path: "/labpod", Entrypoint: []string{"/labpod", "pause"}})
	}
	for _, d := range []struct{ file, ref string }{{"Dockerfile.ccm", CCMImage}, {"Dockerfile.agent", AgentImage}} {
		img, err := buildFromDockerfile(repo, d.file, dir, d.ref)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	var tars []string
	for _, img := range imgs {
		p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)+".tar")
		if err := WriteArchive(img, p); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		tars = append(tars, p)
	}
	return tars, nil
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// withLibraries returns paths plus the shared libraries (and loader) ldd
// lists for them, real files (symbolic links resolved), each once.
func withLibraries(paths []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range paths {
		add(p)
		b, err := exec.Command("ldd", p).Output()
		if err != nil {
			continue // static: nothing to add
		}
		for _, m := range lddLine.FindAllStringSubmatch(string(b), -1) {
			add(m[1])
		}
	}
	return out, nil
}
