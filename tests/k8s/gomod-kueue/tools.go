//go:build tools

// Package tools names the main package built from this module so that it records its
// dependencies; control_plane.py builds it with `go build -mod=readonly`.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
