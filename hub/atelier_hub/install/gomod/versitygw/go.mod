// versitygw, the S3 server of the embedded stack, built from the Go module proxy by
// atelier_hub/install/gobuild.py (never by hand). The module only names the release:
// its build list is versitygw's own (it has no replace or exclude directives), checked
// against the go.sum committed here.
module atelier.invalid/versitygw

go 1.25.0

require github.com/versity/versitygw v1.8.0
