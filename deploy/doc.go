// Package deploy holds vip's installation sources: the manifests in ccm/ and
// agent/, the kustomize base and overlays, and the Helm chart in helm/vip.
// agent/daemonset.yaml, agent/rbac.yaml, ccm/deployment.yaml and ccm/rbac.yaml
// are rendered from pkg/manifest by `make manifests`; the overlays patch
// them and the chart reads them (docs/install.md).
// It has no code; its tests render every form (with the kustomize and Helm
// libraries built from hack/render), check that they agree with each other
// and with the RBAC the end-to-end tests run the programs with, and have the
// real API server validate the result with a server-side dry run, and start
// vip-agent and vip-ccm with the rendered arguments (and the agent's
// environment) to prove they accept them.
package deploy
