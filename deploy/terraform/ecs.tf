# ECS Fargate: one task definition and one service per FinStream process, all
# from the same image with a different command (as in docker-compose.yml), and
# a one-shot "migrate" task that CI runs before each rollout.

locals {
  image = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"

  # Plain settings; the secret ones come from Secrets Manager (secrets.tf).
  environment = {
    DJANGO_DEBUG = "0"
    # The ALB forwards only the app's host names (alb.tf); its health checks
    # use the task's IP as Host, which a fixed list could not allow.
    ALLOWED_HOSTS           = "*"
    CSRF_TRUSTED_ORIGINS    = var.domain_name == "" ? "" : "https://${var.domain_name}"
    LOG_LEVEL               = "INFO"
    LOG_FORMAT              = "json"
    KAFKA_BOOTSTRAP_SERVERS = aws_msk_cluster.main.bootstrap_brokers
    KAFKA_TOPIC_PARTITIONS  = tostring(var.kafka_topic_partitions)
    FINSTREAM_STORAGE_MODE  = "auto"
    SYMBOLS                 = var.symbols
    TRADES_PER_SECOND       = tostring(var.trades_per_second)
    READY_CONSUMERS         = "build_candles,ingest_quotes,detect_anomalies"
    # Metrics servers listen on the task's address for an in-VPC collector.
    METRICS_ADDR = "0.0.0.0"
    # The ALB in front: a client is the address it appends to X-Forwarded-For (docs/api.md, Throttling).
    TRUSTED_PROXIES = "1"
    # With a certificate, HTTPS only: secure cookies and HSTS (docs/deployment.md).
    HTTPS_ONLY = local.https ? "1" : "0"
  }

  # singleton: never two at once (two beats would schedule every task twice,
  # two simulators would publish twice), so a deploy stops the old task first.
  # health_port/health_path: what the container health check fetches (0: none).
  processes = {
    web = {
      # One daphne per task, not python -m finstream.serve: a task has half a core, and the
      # service scales by tasks behind the ALB (web_desired_count).
      command       = ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "finstream.asgi:application"]
      metrics_port  = 0
      health_port   = 8000
      health_path   = "/health"
      cpu           = 512
      memory        = 1024
      desired_count = var.web_desired_count
      singleton     = false
    }
    simulator = {
      command       = ["python", "manage.py", "simulate", "--anomalies", "0.5"]
      metrics_port  = 9101
      health_port   = 9101
      health_path   = "/metrics"
      cpu           = 256
      memory        = 512
      desired_count = var.run_simulator ? 1 : 0
      singleton     = true
    }
    build_candles = {
      command       = ["python", "manage.py", "build_candles"]
      metrics_port  = 9102
      health_port   = 9102
      health_path   = "/metrics"
      cpu           = 512
      memory        = 1024
      desired_count = var.consumer_desired_count
      singleton     = false
    }
    ingest_quotes = {
      command       = ["python", "manage.py", "ingest_quotes"]
      metrics_port  = 9103
      health_port   = 9103
      health_path   = "/metrics"
      cpu           = 512
      memory        = 1024
      desired_count = var.consumer_desired_count
      singleton     = false
    }
    detect_anomalies = {
      command       = ["python", "manage.py", "detect_anomalies"]
      metrics_port  = 9104
      health_port   = 9104
      health_path   = "/metrics"
      cpu           = 512
      memory        = 1024
      desired_count = var.consumer_desired_count
      singleton     = false
    }
    relay_streams = {
      command       = ["python", "manage.py", "relay_streams"]
      metrics_port  = 9105
      health_port   = 9105
      health_path   = "/metrics"
      cpu           = 256
      memory        = 512
      desired_count = var.consumer_desired_count
      singleton     = false
    }
    celery_worker = {
      command       = ["celery", "-A", "finstream", "worker", "--pool", "threads", "--concurrency", "2", "--loglevel", "INFO"]
      metrics_port  = 9106
      health_port   = 0
      health_path   = ""
      cpu           = 512
      memory        = 1024
      desired_count = var.celery_worker_desired_count
      singleton     = false
    }
    celery_beat = {
      command       = ["celery", "-A", "finstream", "beat", "--loglevel", "INFO", "--schedule", "/tmp/celerybeat-schedule"]
      metrics_port  = 0
      health_port   = 0
      health_path   = ""
      cpu           = 256
      memory        = 512
      desired_count = 1
      singleton     = true
    }
  }

  container_secrets = [
    for name in local.app_secret_names : { name = name, valueFrom = aws_secretsmanager_secret.app[name].arn }
  ]
}

resource "aws_ecs_cluster" "main" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "app" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}

resource "aws_ecs_task_definition" "process" {
  for_each = local.processes

  family                   = "${var.name}-${replace(each.key, "_", "-")}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # CI replaces containerDefinitions[0].image with each new image (ci-cd.yml).
  container_definitions = jsonencode([{
    name         = "app"
    image        = local.image
    essential    = true
    command      = each.value.command
    stopTimeout  = 30 # consumers finish their batch on SIGTERM
    portMappings = each.key == "web" ? [{ containerPort = 8000, protocol = "tcp" }] : []
    environment = [
      # The web's ASGI requests each run in a thread of their own: their connections come from a pool.
      for key, value in merge(local.environment, {
        METRICS_PORT       = tostring(each.value.metrics_port)
        DATABASE_POOL_SIZE = each.key == "web" ? "10" : "0"
      }) :
      { name = key, value = value }
    ]
    secrets = local.container_secrets
    healthCheck = each.value.health_port > 0 ? {
      command = [
        "CMD-SHELL",
        format("python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d%s', timeout=3)\"", each.value.health_port, each.value.health_path),
      ]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    } : null
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.app.name
        awslogs-region        = var.region
        awslogs-stream-prefix = each.key
      }
    }
  }])
}

resource "aws_ecs_service" "process" {
  for_each = local.processes

  name             = "${var.name}-${replace(each.key, "_", "-")}"
  cluster          = aws_ecs_cluster.main.id
  task_definition  = aws_ecs_task_definition.process[each.key].arn
  desired_count    = each.value.desired_count
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  enable_execute_command             = true
  propagate_tags                     = "SERVICE"
  deployment_minimum_healthy_percent = each.value.singleton ? 0 : 100
  deployment_maximum_percent         = each.value.singleton ? 100 : 200
  health_check_grace_period_seconds  = each.key == "web" ? 60 : null

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.app.id]
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = each.key == "web" ? [aws_lb_target_group.web.arn] : []
    content {
      target_group_arn = load_balancer.value
      container_name   = "app"
      container_port   = 8000
    }
  }

  # CI rolls out new images by registering task definition revisions itself;
  # Terraform must not roll them back on its next apply.
  lifecycle {
    ignore_changes = [task_definition]
  }

  depends_on = [aws_lb_listener_rule.web, aws_iam_role_policy.execution_secrets]
}

# One-shot: migrations, seed symbols, alert rules, admin user, Kafka topics.
# CI runs it with each new image before updating the services.
resource "aws_ecs_task_definition" "migrate" {
  family                   = "${var.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name      = "app"
    image     = local.image
    essential = true
    command   = ["sh", "-c", "python manage.py bootstrap && python manage.py kafka_topics"]
    environment = [
      for key, value in merge(local.environment, { METRICS_PORT = "0", DJANGO_SUPERUSER_USERNAME = "admin" }) :
      { name = key, value = value }
    ]
    secrets = concat(local.container_secrets, [
      { name = "DJANGO_SUPERUSER_PASSWORD", valueFrom = aws_secretsmanager_secret.app["DJANGO_SUPERUSER_PASSWORD"].arn },
    ])
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.app.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "migrate"
      }
    }
  }])
}
