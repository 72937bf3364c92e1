# tflint's bundled Terraform ruleset, every rule of it ("all"): naming, typed and
# documented variables and outputs, the standard module structure, no unused
# declaration, pinned provider versions. The AWS ruleset is a plugin downloaded from
# GitHub, so it is not used here (`tflint --init` cannot run on the build machines).
# ref: https://github.com/terraform-linters/tflint-ruleset-terraform/blob/main/docs/rules/README.md
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
