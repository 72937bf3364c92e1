// tflint, which the Terraform checks run, built from the Go module proxy by
// tests/terraform/terraform_tools.py through hub/atelier_hub/install/gobuild.py
// (never by hand). Its own module apart from terraform's (gomod/): tflint v0.64.0
// needs newer releases of about a hundred shared modules (grpc 1.82 where terraform
// v1.11.4 pins 1.59), so the two cannot share one build list. The module only names
// the release: the build list is tflint's own (it has no replace or exclude
// directives), checked against the go.sum committed here.
module atelier.invalid/tflint

go 1.26.3

require github.com/terraform-linters/tflint v0.64.0
