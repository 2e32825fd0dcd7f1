//go:build tools

// Package tools pins the helm command line for the real-cluster lab's chart
// scenario (bin/helm, built only when missing). The Kubernetes modules are
// raised to the project's own version (go.mod) so the build shares the
// compile cache of client-go, cli-runtime and kubectl with bin/kubectl.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
