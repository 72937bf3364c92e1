//go:build tools

// Package tools names the main package built from this module so that it records its
// dependencies; kuberay.py builds it with `go build -mod=readonly`.
package tools

import (
	_ "github.com/ray-project/kuberay/ray-operator"
)
