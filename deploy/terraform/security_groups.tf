# Who may talk to whom: the internet to the ALB, the ALB to the web tasks, the
# tasks to PostgreSQL, Redis and Kafka. Nothing else comes in.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "FinStream ALB: HTTP(S) from the allowed CIDRs"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "HTTP"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = var.allowed_ingress_cidrs
  }

  ingress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.allowed_ingress_cidrs
  }

  egress {
    description = "To the web tasks"
    from_port   = 8000
    to_port     = 8000
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group" "app" {
  name        = "${var.name}-app"
  description = "FinStream ECS tasks"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "daphne from the ALB"
    from_port       = 8000
    to_port         = 8000
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }

  # The web's /metrics for a Prometheus or ADOT collector in the VPC (the ALB does not forward it).
  ingress {
    description = "The web's /metrics from inside the VPC"
    from_port   = 8000
    to_port     = 8000
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }

  # The other processes' metrics ports (9101-9110) for the same collector.
  ingress {
    description = "Prometheus metrics from inside the VPC"
    from_port   = 9101
    to_port     = 9110
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }

  egress {
    description = "Everything: AWS APIs through NAT, PostgreSQL, Redis, Kafka"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "FinStream PostgreSQL: only from the tasks"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "PostgreSQL"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.app.id]
  }
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "FinStream Redis: only from the tasks"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "Redis"
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = [aws_security_group.app.id]
  }
}

resource "aws_security_group" "kafka" {
  name        = "${var.name}-kafka"
  description = "FinStream MSK brokers: only from the tasks"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "Kafka, plaintext and TLS listeners"
    from_port       = 9092
    to_port         = 9094
    protocol        = "tcp"
    security_groups = [aws_security_group.app.id]
  }
}
