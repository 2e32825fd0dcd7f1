package lbsvc

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// NodeRef is the object a node's Events are attached to: its Node, by name
// (the UID is the name, as kubelet does, so Events need no Node read).
func NodeRef(node string) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)}
}
