# Every secret is generated here and stored in Secrets Manager; ECS injects
# them into the containers as environment variables at start (the `secrets`
# of a container definition), so no password is written in code, in a task
# definition or in CI. Alphanumeric only: they travel inside URLs.

resource "random_password" "django_secret_key" {
  length  = 64
  special = false
}

resource "random_password" "db" {
  length  = 32
  special = false
}

resource "random_password" "redis_auth" {
  length  = 48
  special = false
}

resource "random_password" "admin" {
  length  = 24
  special = false
}

locals {
  # Names of the variables the app reads (finstream/settings.py); the list is
  # static because for_each may not depend on the (sensitive) values.
  app_secret_names = ["DJANGO_SECRET_KEY", "TIMESCALE_URL", "REDIS_URL", "CELERY_BROKER_URL"]
  # Only the one-shot migrate task creates the admin user.
  secret_names = concat(local.app_secret_names, ["DJANGO_SUPERUSER_PASSWORD"])

  redis_authority = "${random_password.redis_auth.result}@${aws_elasticache_replication_group.main.primary_endpoint_address}:6379"

  secret_values = {
    DJANGO_SECRET_KEY = random_password.django_secret_key.result
    TIMESCALE_URL     = "postgresql://${aws_db_instance.main.username}:${random_password.db.result}@${aws_db_instance.main.address}:${aws_db_instance.main.port}/${aws_db_instance.main.db_name}"
    # rediss://: ElastiCache encrypts in transit; Celery wants the certificate
    # policy spelled out in its URL.
    REDIS_URL                 = "rediss://:${local.redis_authority}/0"
    CELERY_BROKER_URL         = "rediss://:${local.redis_authority}/0?ssl_cert_reqs=required"
    DJANGO_SUPERUSER_PASSWORD = random_password.admin.result
  }
}

resource "aws_secretsmanager_secret" "app" {
  for_each = toset(local.secret_names)

  name                    = "${var.name}/${lower(replace(each.key, "_", "-"))}"
  description             = "FinStream ${each.key}"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "app" {
  for_each = toset(local.secret_names)

  secret_id     = aws_secretsmanager_secret.app[each.key].id
  secret_string = local.secret_values[each.key]
}
