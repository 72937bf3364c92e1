output "json" {
  description = "The session role's policy document, JSON"
  value       = jsonencode(local.policy)
}

output "own_prefix" {
  description = "A user's private prefix as the policy writes it (with the session tag's variable)"
  value       = local.own_prefix
}
