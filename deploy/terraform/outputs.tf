output "url" {
  description = "Where the app answers."
  value       = "${local.https ? "https" : "http"}://${var.domain_name != "" ? var.domain_name : aws_lb.web.dns_name}"
}

output "alb_dns_name" {
  description = "Point domain_name's DNS record (CNAME or alias) here."
  value       = aws_lb.web.dns_name
}

output "ecr_repository_url" {
  description = "Push images here (GitHub variable ECR_REPOSITORY is its last path part)."
  value       = aws_ecr_repository.app.repository_url
}

output "ecs_cluster_name" {
  description = "GitHub variable ECS_CLUSTER."
  value       = aws_ecs_cluster.main.name
}

output "ecs_services" {
  description = "Service name per FinStream process."
  value       = { for key, service in aws_ecs_service.process : key => service.name }
}

output "migrate_task_family" {
  description = "Task definition family of the one-shot migrate task."
  value       = aws_ecs_task_definition.migrate.family
}

output "github_deploy_role_arn" {
  description = "GitHub variable AWS_DEPLOY_ROLE_ARN (empty without github_repository)."
  value       = local.github_enabled ? aws_iam_role.github_deploy[0].arn : ""
}

output "database_endpoint" {
  description = "RDS PostgreSQL host:port (credentials: Secrets Manager)."
  value       = "${aws_db_instance.main.address}:${aws_db_instance.main.port}"
}

output "kafka_bootstrap_brokers" {
  description = "MSK bootstrap brokers (plaintext listener, inside the VPC)."
  value       = aws_msk_cluster.main.bootstrap_brokers
}

output "secret_arns" {
  description = "Secrets Manager ARNs by variable name."
  value       = { for name, secret in aws_secretsmanager_secret.app : name => secret.arn }
}
