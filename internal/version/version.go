// Package version carries the build's version, set at link time with
// -ldflags "-X github.com/vip-lb/vip/internal/version.Version=v1.2.3".
package version

// Version is the release this binary was built from ("dev" when unset).
var Version = "dev"

// Image returns the container image of a vip program at this version.
func Image(program string) string {
	tag := Version
	if tag == "dev" {
		tag = "latest"
	}
	return "ghcr.io/vip-lb/" + program + ":" + tag
}
