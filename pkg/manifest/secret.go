package manifest

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// Where BGP passwords go instead of the Pod spec.
const (
	// PasswordSecret is the Secret holding the BGP passwords of a generated
	// DaemonSet (one key per peer address, ':' written '-').
	PasswordSecret = Name + "-bgp"
	// passwordMount is where the password Secret or host path appears in
	// the container; the agent reads it with --bgp-password-file.
	passwordMount = "/etc/vip-agent/bgp"
)

// splitPasswords returns the peer list without passwords and the
// passwords by Secret key (peer address, ':' as '-'). The list was checked
// by withDefaults.
func splitPasswords(list string) (string, map[string]string) {
	peers, err := bgpconfig.ParsePeers(list)
	if err != nil {
		return list, nil
	}
	pw := map[string]string{}
	for i, p := range peers {
		if p.Password == "" {
			continue
		}
		pw[strings.ReplaceAll(p.Address.String(), ":", "-")] = p.Password
		peers[i].Password = ""
	}
	if len(pw) == 0 {
		return list, nil
	}
	return bgpconfig.FormatPeers(peers), pw
}

// passwordSecret is the Secret of the DaemonSet forms.
func passwordSecret(o Options, pw map[string]string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: PasswordSecret, Namespace: o.Namespace, Labels: selector()},
		Type:       corev1.SecretTypeOpaque,
		StringData: pw,
	}
}

// mountPasswords mounts the passwords into spec's container and points
// --bgp-password-file at them: the Secret for a DaemonSet, the host path
// PasswordFile for a static Pod.
func mountPasswords(spec *corev1.PodSpec, o Options, secret bool) {
	mode := int32(0o400)
	v := corev1.Volume{Name: "bgp-passwords"}
	if secret {
		v.VolumeSource = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: PasswordSecret, DefaultMode: &mode}}
	} else {
		v.VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: o.PasswordFile}}
	}
	spec.Volumes = append(spec.Volumes, v)
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: passwordMount, ReadOnly: true})
	c.Args = append(c.Args, "--bgp-password-file="+passwordMount)
}
