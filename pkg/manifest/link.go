package manifest

import (
	"crypto/rand"
	"encoding/base64"
	"errors"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

// Link liveness (--liveness=link, docs/liveness.md): the heartbeat key's
// Secret and where the agent reads it.
const (
	// LinkKeySecret is the Secret holding the cluster's heartbeat key under
	// LinkKeyItem. Every agent of a cluster must read the same key.
	LinkKeySecret = "vip-link-key"
	// LinkKeyItem is the Secret's key (data item) holding the heartbeat key.
	LinkKeyItem = "key"
	// LinkKeyBytes is how many random bytes a generated key holds (the
	// agent needs at least 16); they are written base64-encoded.
	LinkKeyBytes = 32
	// linkKeyMount is the folder the Secret is mounted on, read-only.
	linkKeyMount = "/run/secrets/vip-link"
)

// linkMode reports whether o's agent runs --liveness=link (o has its
// defaults).
func (o Options) linkMode() bool { return o.Liveness == agentconfig.LivenessLink }

// defaultLiveness is link for a DaemonSet serving Services in ARP mode: the
// Secret holding its key is part of the manifest. Elsewhere the liveness
// mode is not used (BGP, control plane only) or the key cannot be mounted
// (a static Pod has no Secrets): lease.
func defaultLiveness(form Form, o Options) string {
	if form != FormPod && o.ARP && o.Services {
		return agentconfig.LivenessLink
	}
	return agentconfig.LivenessLease
}

func (o Options) checkLiveness(form Form) error {
	switch o.Liveness {
	case agentconfig.LivenessLease:
		return firstBroken(rule{o.LinkKeySecret != "", "--link-key-secret needs --liveness=link"})
	case agentconfig.LivenessLink:
	default:
		return errors.New(`--liveness "` + o.Liveness + `": want link or lease`)
	}
	return firstBroken(
		rule{form == FormPod, "--liveness=link needs a DaemonSet: a static Pod cannot mount the key Secret " + LinkKeySecret},
		rule{!o.ARP || !o.Services, "--liveness=link applies to Services in ARP mode (--arp --services)"},
		rule{o.LinkKeySecret != "" && len(validation.IsDNS1123Subdomain(o.LinkKeySecret)) > 0, "--link-key-secret " + o.LinkKeySecret + " is not a Secret name"},
	)
}

// newLinkKey is LinkKeyBytes from crypto/rand, base64-encoded: drawn at
// every rendering, never the same twice.
func newLinkKey() string {
	b := make([]byte, LinkKeyBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand: the program ends if the system cannot supply randomness)
	return base64.StdEncoding.EncodeToString(b)
}

// linkKeySecret is the Secret of a generated link-mode DaemonSet, holding a
// fresh random key.
func linkKeySecret(o Options) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: LinkKeySecret, Namespace: o.Namespace, Labels: selector()},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{LinkKeyItem: newLinkKey()},
	}
}

// linkArgs are the agent's link-mode flags with the key mounted at
// linkKeyMount.
func linkArgs() []string {
	return []string{"--liveness=" + agentconfig.LivenessLink, "--link-key-file=" + linkKeyMount + "/" + LinkKeyItem}
}

// linkKeyVolume is the key Secret's volume (readable by the agent only)
// and its read-only mount.
func linkKeyVolume(secret string) (corev1.Volume, corev1.VolumeMount) {
	mode := int32(0o400)
	return corev1.Volume{
			Name: "link-key",
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: secret, DefaultMode: &mode,
				Items: []corev1.KeyToPath{{Key: LinkKeyItem, Path: LinkKeyItem}},
			}},
		},
		corev1.VolumeMount{Name: "link-key", MountPath: linkKeyMount, ReadOnly: true}
}

// mountLinkKey puts link mode into spec's container: the key Secret
// mounted and the flags that read it.
func mountLinkKey(spec *corev1.PodSpec, secret string) {
	v, m := linkKeyVolume(secret)
	spec.Volumes = append(spec.Volumes, v)
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, m)
	c.Args = append(c.Args, linkArgs()...)
}
