// Package docs holds vip's operator documentation. It has no code; its tests
// read the sources under pkg/ and cmd/ and fail when a Prometheus metric or
// an Event reason is missing from metrics.md or events.md.
package docs
