# The public entry: an ALB in front of the web (daphne) tasks, WebSocket-ready.
# - idle_timeout far above the default 60 s, so quiet WebSocket clients stay on;
# - no stickiness: any web task can serve any client (state is in Redis and
#   PostgreSQL), so load spreads evenly and a task can drain freely;
# - a listener rule that forwards only the app's own host names. Django's own
#   host check is therefore off (ALLOWED_HOSTS="*" in ecs.tf): the ALB's health
#   checks arrive with the task's IP as Host, which no fixed list could allow.

locals {
  https     = var.certificate_arn != ""
  web_hosts = compact([var.domain_name, aws_lb.web.dns_name])
}

resource "aws_lb" "web" {
  name               = var.name
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.alb.id]
  subnets            = aws_subnet.public[*].id

  idle_timeout               = var.alb_idle_timeout
  enable_http2               = true
  drop_invalid_header_fields = true
  deletion_protection        = var.deletion_protection
}

resource "aws_lb_target_group" "web" {
  name        = "${var.name}-web"
  port        = 8000
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = aws_vpc.main.id

  # A deploy waits this long for open connections (WebSockets among them)
  # before it stops an old task; clients reconnect to a new one.
  deregistration_delay = 30

  stickiness {
    type    = "lb_cookie"
    enabled = false
  }

  # /health: the process answers. /ready also checks the consumers'
  # heartbeats, which must not take every web task out of the ALB at once.
  health_check {
    path                = "/health"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.web.arn
  port              = 80
  protocol          = "HTTP"

  # With a certificate, plain HTTP only redirects; without one it serves
  # through the host rule below and answers 404 to any other host.
  default_action {
    type = local.https ? "redirect" : "fixed-response"

    dynamic "redirect" {
      for_each = local.https ? [1] : []
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }

    dynamic "fixed_response" {
      for_each = local.https ? [] : [1]
      content {
        content_type = "text/plain"
        message_body = "Not found"
        status_code  = "404"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count = local.https ? 1 : 0

  load_balancer_arn = aws_lb.web.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type = "fixed-response"

    fixed_response {
      content_type = "text/plain"
      message_body = "Not found"
      status_code  = "404"
    }
  }
}

resource "aws_lb_listener_rule" "web" {
  listener_arn = local.https ? aws_lb_listener.https[0].arn : aws_lb_listener.http.arn
  priority     = 10

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.web.arn
  }

  condition {
    host_header {
      values = local.web_hosts
    }
  }
}
