package cluster

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestParseDockerfiles(t *testing.T) {
	for _, tc := range []struct{ file, copyTo, user, entry, link, target string }{
		{"Dockerfile.ccm", "/vip-ccm", "65532:65532", "/vip-ccm", "kube-vip-cloud-provider", "vip-ccm"},
		{"Dockerfile.agent", "/vip-agent", "", "/vip-agent", "kube-vip", "vip-agent"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			st, err := parseDockerfile(string(b))
			if err != nil {
				t.Fatal(err)
			}
			if st.copyTo != tc.copyTo || st.user != tc.user || len(st.entrypoint) != 1 || st.entrypoint[0] != tc.entry {
				t.Errorf("got copy %q user %q entrypoint %v", st.copyTo, st.user, st.entrypoint)
			}
			if st.links[tc.link] != tc.target {
				t.Errorf("link %s -> %q, want %q (links %v)", tc.link, st.links[tc.link], tc.target, st.links)
			}
			if len(st.links) > 0 && st.linkDir == "" {
				t.Errorf("links %v but no COPY of the output folder", st.links)
			}
			if st.args["VERSION"] == "" {
				t.Errorf("no VERSION default: %v", st.args)
			}
		})
	}
	if _, err := parseDockerfile("FROM scratch\nRUN true\n"); err == nil {
		t.Error("a Dockerfile without a go build line was accepted")
	}
}

func TestWriteArchive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("\x7fELF fake"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	img := Image{Ref: "vip.local/x:lab", Binary: bin, Path: "/x", Entrypoint: []string{"/x"}, User: "65532:65532"}
	if err := WriteArchive(img, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	var m []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil || len(m) != 1 {
		t.Fatalf("manifest.json: %v %s", err, files["manifest.json"])
	}
	if m[0].RepoTags[0] != img.Ref || len(m[0].Layers) != 1 {
		t.Errorf("manifest %+v", m[0])
	}
	var cfg struct {
		Config struct {
			Entrypoint []string
			User       string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[m[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	layer := files[m[0].Layers[0]]
	if cfg.RootFS.DiffIDs[0] != "sha256:"+sha(layer) {
		t.Errorf("diff_id %s does not match the layer", cfg.RootFS.DiffIDs[0])
	}
	if cfg.Config.User != img.User || cfg.Config.Entrypoint[0] != "/x" {
		t.Errorf("config %+v", cfg.Config)
	}
}

func TestParseAnswer(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Answer
		ok   bool
	}{
		{"node=vcl-n1 pod=echo-1 client=10.98.0.100\n", Answer{"vcl-n1", "echo-1", "10.98.0.100"}, true},
		{"node=vcl-n1 pod=echo-1\n", Answer{}, false},
		{"", Answer{}, false},
	} {
		got, err := ParseAnswer(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseAnswer(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

// The agnhost stand-in carries labpod as /bin/wget (Files and Links).
func TestAgnhostImageLayer(t *testing.T) {
	dir := t.TempDir()
	agn, lp := filepath.Join(dir, "agnhost"), filepath.Join(dir, "labpod")
	for _, f := range []string{agn, lp} {
		if err := os.WriteFile(f, []byte("\x7fELF "+filepath.Base(f)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := agnhostImage(agn, lp)
	img.Host = nil // the host's tools are not the point here
	layer, err := layerTar(img)
	if err != nil {
		t.Fatal(err)
	}
	files, links := map[string]string{}, map[string]string{}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		switch h.Typeflag {
		case tar.TypeReg:
			files[h.Name] = string(b)
		case tar.TypeSymlink:
			links[h.Name] = h.Linkname
		}
	}
	if files["bin/labpod"] != "\x7fELF labpod" || files["agnhost"] != "\x7fELF agnhost" {
		t.Errorf("files %v", files)
	}
	if links["bin/wget"] != "labpod" || links["bin/sh"] != "busybox" {
		t.Errorf("links %v", links)
	}
}
