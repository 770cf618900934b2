# Amazon MSK: one broker per zone. The app's Kafka client speaks plaintext
# today (streaming/kafka.py has no TLS settings), so clients may use either
# listener inside the VPC while brokers talk TLS among themselves; switch
# client_broker to "TLS" once the app supports it (docs/deployment.md).

resource "aws_msk_configuration" "main" {
  name           = "${var.name}-kafka"
  kafka_versions = [var.kafka_version]

  # Topics are created by `manage.py kafka_topics` with their partitions and
  # retention; a mistyped topic name must fail, not create a topic.
  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=${min(var.az_count, 3)}
    min.insync.replicas=1
    num.partitions=${var.kafka_topic_partitions}
  PROPERTIES
}

resource "aws_msk_cluster" "main" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.az_count

  broker_node_group_info {
    instance_type   = var.kafka_instance_type
    client_subnets  = aws_subnet.private[*].id
    security_groups = [aws_security_group.kafka.id]

    storage_info {
      ebs_storage_info {
        volume_size = var.kafka_volume_size
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.main.arn
    revision = aws_msk_configuration.main.latest_revision
  }

  encryption_info {
    encryption_in_transit {
      client_broker = "TLS_PLAINTEXT"
      in_cluster    = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.kafka.name
      }
    }
  }
}

resource "aws_cloudwatch_log_group" "kafka" {
  name              = "/msk/${var.name}"
  retention_in_days = var.log_retention_days
}
