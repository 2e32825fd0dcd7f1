package lbsvc

import (
	"strings"

	v1 "k8s.io/api/core/v1"
)

// Annotations by which a Service consents to share its address with
// Services of other namespaces (after Cilium's lbipam.cilium.io/sharing-key
// and sharing-cross-namespace). Inside one namespace the pools ConfigMap's
// allow-share-<namespace> decides alone.
const (
	// AnnotationSharingKey is an opaque key: only Services carrying the same
	// key may share an address across namespaces.
	AnnotationSharingKey = "vip.io/sharing-key"
	// AnnotationSharingCrossNamespace lists, comma-separated, the namespaces
	// whose Services may share this Service's address ("*": any).
	AnnotationSharingCrossNamespace = "vip.io/sharing-cross-namespace"
)

// maxSharingKey bounds the sharing key; longer keys are ignored.
const maxSharingKey = 253

// SharingConsent returns svc's sharing key and the namespaces it agrees to
// share with across namespaces (both empty when it gave no consent).
func SharingConsent(svc *v1.Service) (key string, namespaces []string) {
	key = strings.TrimSpace(svc.Annotations[AnnotationSharingKey])
	if key == "" || len(key) > maxSharingKey {
		return "", nil
	}
	for ns := range strings.SplitSeq(svc.Annotations[AnnotationSharingCrossNamespace], ",") {
		if ns = strings.TrimSpace(ns); ns != "" && len(ns) <= 63 {
			namespaces = append(namespaces, ns)
		}
		if len(namespaces) >= 64 {
			break
		}
	}
	if len(namespaces) == 0 {
		return "", nil
	}
	return key, namespaces
}
