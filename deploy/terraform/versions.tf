# FinStream on AWS: ECS Fargate behind an ALB, with MSK (Kafka), RDS PostgreSQL,
# ElastiCache Redis, ECR and Secrets Manager. docs/deployment.md walks through
# a first deployment; tests/test_deploy_artifacts.py parses and formats-checks
# every file here.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds the generated secrets (they are also in Secrets Manager): keep
  # it in an encrypted, access-controlled bucket. Configure at init time:
  #   terraform init -backend-config="bucket=..." -backend-config="key=finstream.tfstate" \
  #                  -backend-config="region=..." -backend-config="encrypt=true"
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "finstream"
      ManagedBy = "terraform"
    }
  }
}
