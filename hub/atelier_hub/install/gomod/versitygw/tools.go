//go:build tools

// Package tools names versitygw's main package so that the module records its
// dependencies; gobuild.py builds it with `go build -mod=readonly`.
package tools

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
