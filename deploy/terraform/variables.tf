variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "finstream"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "The name must be 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "az_count" {
  description = "Availability zones to spread subnets, brokers and tasks over (2 or 3)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "The az_count must be 2 or 3: MSK and the ALB need at least two zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; public and private /24 subnets are cut from it."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

variable "image_tag" {
  description = "Tag of the app image in ECR that the task definitions start with (CI deploys later tags itself)."
  type        = string
}

variable "domain_name" {
  description = "Host name the app is served under (e.g. finstream.example.com); empty: only the ALB's DNS name."
  type        = string
  default     = ""
}

variable "certificate_arn" {
  description = "ACM certificate for domain_name; set it to serve HTTPS (HTTP then redirects). Empty: HTTP only."
  type        = string
  default     = ""
}

variable "allowed_ingress_cidrs" {
  description = "Who may reach the ALB."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_idle_timeout" {
  description = "Seconds the ALB keeps an idle connection open. WebSocket clients of the live streams may be quiet for a while, so this is far above the 60 s default."
  type        = number
  default     = 3600

  validation {
    condition     = var.alb_idle_timeout >= 300 && var.alb_idle_timeout <= 4000
    error_message = "The alb_idle_timeout must be 300-4000 s: shorter cuts WebSocket clients off, 4000 is the ALB's maximum."
  }
}

variable "web_desired_count" {
  description = "Web (daphne) tasks behind the ALB."
  type        = number
  default     = 2
}

variable "consumer_desired_count" {
  description = "Tasks per Kafka consumer (build_candles, ingest_quotes, detect_anomalies, relay_streams); at most the topics' partition count do work."
  type        = number
  default     = 1
}

variable "celery_worker_desired_count" {
  description = "Celery worker tasks."
  type        = number
  default     = 1
}

variable "run_simulator" {
  description = "Run the market simulator (the data source until a real feed replaces it)."
  type        = bool
  default     = true
}

variable "symbols" {
  description = "SYMBOLS: comma-separated tickers."
  type        = string
  default     = "AAPL,GOOGL,MSFT,AMZN,META,NVDA,TSLA,JPM,V,JNJ"
}

variable "trades_per_second" {
  description = "TRADES_PER_SECOND of the simulator."
  type        = number
  default     = 100
}

variable "kafka_topic_partitions" {
  description = "KAFKA_TOPIC_PARTITIONS: partitions of the trade, quote and candle topics (the ceiling of consumer parallelism)."
  type        = number
  default     = 4
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial RDS storage in GiB (grows automatically up to 4x)."
  type        = number
  default     = 50
}

variable "db_multi_az" {
  description = "A standby RDS instance in a second zone."
  type        = bool
  default     = false
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_replicas" {
  description = "Redis read replicas; 1 or more enables automatic failover."
  type        = number
  default     = 1
}

variable "kafka_version" {
  description = "MSK Kafka version."
  type        = string
  default     = "3.9.x"
}

variable "kafka_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.t3.small"
}

variable "kafka_volume_size" {
  description = "EBS storage per MSK broker in GiB."
  type        = number
  default     = 100
}

variable "log_retention_days" {
  description = "CloudWatch retention of the tasks' logs."
  type        = number
  default     = 30
}

variable "deletion_protection" {
  description = "Protect the database and the ALB from `terraform destroy`."
  type        = bool
  default     = true
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflow deploys (OIDC role); empty: no role."
  type        = string
  default     = ""
}
