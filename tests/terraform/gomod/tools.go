//go:build tools

// Package tools names terraform's main package so that the module records its
// dependencies; tests/terraform/tools.py builds it with `go build`.
package tools

import (
	_ "github.com/hashicorp/terraform"
)
