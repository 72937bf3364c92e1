terraform {
  # No provider: only built-in functions, so this module plans (and is tested) anywhere.
  required_version = ">= 1.5.7"
}
