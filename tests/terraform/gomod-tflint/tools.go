//go:build tools

// Package tools names tflint's main package so that the module records its
// dependencies; terraform_tools.py builds it with `go build -mod=readonly`.
package tools

import (
	_ "github.com/terraform-linters/tflint"
)
