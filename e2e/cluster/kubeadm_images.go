package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// kubeadm's control-plane images, made from the binaries in bin/ (the lab
// reaches no registry) under the names `kubeadm config images list --config`
// prints for the lab's kubeadm configuration:
//
//   - kube-apiserver, kube-controller-manager, kube-scheduler, etcd: the
//     binary at /usr/local/bin/<name> (kubeadm's static Pods run them by
//     name through PATH) with the shared libraries ldd lists for it (they
//     are built with cgo: glibc and its loader);
//   - pause: the lab's pause (labpod pause), also containerd's sandbox
//     image on the kubeadm nodes;
//   - coredns and kube-proxy are not built: the configuration disables both
//     addons (dns.disabled, proxy.disabled), so kubeadm neither lists nor
//     installs them. The control-plane VIP needs neither: no Pod on these
//     nodes resolves names or reaches a ClusterIP (every one is a
//     hostNetwork static Pod), and a kube-proxy image would need iptables
//     and nft with their libraries inside.
//
// etcd's tag is set to the version of bin/etcd (etcd.local.imageTag) rather
// than kubeadm's default, so the image says what it runs.

// ErrKubeadmImage is returned for an image kubeadm lists that the lab
// cannot make.
var ErrKubeadmImage = errors.New("cluster: kubeadm image the lab cannot build")

// kubeadmImageList runs `kubeadm config images list --config cfg`.
func kubeadmImageList(kubeadm, cfg string) ([]string, error) {
	out, err := run(kubeadm, "config", "images", "list", "--config", cfg)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// kubeadmImage maps one image reference kubeadm lists to what packs it.
func kubeadmImage(ref, binDir, pause string) (Image, error) {
	name := ref
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	name = name[strings.LastIndexByte(name, '/')+1:]
	switch name {
	case "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd":
		bin := filepath.Join(binDir, name)
		libs, err := withLibraries([]string{bin})
		if err != nil {
			return Image{}, err
		}
		return Image{Ref: ref, Binary: bin, Path: "/usr/local/bin/" + name, Entrypoint: []string{"/usr/local/bin/" + name},
			Host: libs[1:]}, nil
	case "pause":
		return Image{Ref: ref, Binary: pause, Path: "/labpod", Entrypoint: []string{"/labpod", "pause"}}, nil
	}
	return Image{}, fmt.Errorf("%w: %s (disable its addon in the kubeadm configuration)", ErrKubeadmImage, ref)
}

// buildKubeadmImages writes the images kubeadm lists for cfg, plus the
// lab's vip-agent image (built from Dockerfile.agent's build line), into
// dir. It returns the tarballs, the vip-agent binary (the same that is in
// the image: the manifest generator) and the pause image's reference.
func buildKubeadmImages(repo, binDir, cfg, dir string) (tars []string, agent, pauseRef string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", "", err
	}
	refs, err := kubeadmImageList(filepath.Join(binDir, "kubeadm"), cfg)
	if err != nil {
		return nil, "", "", err
	}
	labpod, err := buildLabpod(repo, dir)
	if err != nil {
		return nil, "", "", err
	}
	var imgs []Image
	for _, ref := range refs {
		img, err := kubeadmImage(ref, binDir, labpod)
		if err != nil {
			return nil, "", "", err
		}
		if strings.Contains(ref, "/pause:") {
			pauseRef = ref
		}
		imgs = append(imgs, img)
	}
	if pauseRef == "" {
		return nil, "", "", fmt.Errorf("%w: kubeadm lists no pause image in %v", ErrKubeadmImage, refs)
	}
	ag, err := buildFromDockerfile(repo, "Dockerfile.agent", dir, AgentImage)
	if err != nil {
		return nil, "", "", err
	}
	imgs = append(imgs, ag)
	for _, img := range imgs {
		p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)+".tar")
		if err := WriteArchive(img, p); err != nil {
			return nil, "", "", fmt.Errorf("image %s: %w", img.Ref, err)
		}
		tars = append(tars, p)
	}
	return tars, ag.Binary, pauseRef, nil
}

// etcdVersion is bin/etcd's version ("3.6.16").
func etcdVersion(binDir string) (string, error) {
	out, err := exec.Command(filepath.Join(binDir, "etcd"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("etcd --version: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "etcd Version: "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("etcd --version: no version in %q", out)
}

// kubeVersion is bin/kubeadm's version ("v1.37.2"): the control plane's,
// given to kubeadm so that it never asks the internet.
func kubeVersion(binDir string) (string, error) {
	out, err := exec.Command(filepath.Join(binDir, "kubeadm"), "version", "-o", "short").Output()
	if err != nil {
		return "", fmt.Errorf("kubeadm version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
