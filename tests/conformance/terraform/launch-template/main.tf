# Terraform's aws_launch_template against cloudctl, and an aws_instance launched from it.
# tests/conformance/test_terraform.py runs init, plan, apply, plan (no changes), destroy.
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "endpoint" {
  type        = string
  description = "cloudctl's EC2 endpoint, e.g. http://127.0.0.1:4567"
}

provider "aws" {
  region = "cloudctl-1"
  endpoints {
    ec2 = var.endpoint
  }
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

data "aws_ami" "blank" {
  most_recent = true
  owners      = ["cloudctl"]
  filter {
    name   = "name"
    values = ["cloudctl-blank"]
  }
}

data "aws_vpc" "default" {
  default = true
}

data "aws_security_group" "default" {
  vpc_id = data.aws_vpc.default.id
  name   = "default"
}

resource "aws_launch_template" "web" {
  name                                 = "tf-web"
  description                          = "web servers"
  image_id                             = data.aws_ami.blank.id
  instance_type                        = "t3.nano"
  user_data                            = base64encode("#!/bin/sh\necho from-a-template\n")
  vpc_security_group_ids               = [data.aws_security_group.default.id]
  instance_initiated_shutdown_behavior = "terminate"

  block_device_mappings {
    device_name = "/dev/sdf"
    ebs {
      volume_size           = 1
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name = "tf-from-template"
    }
  }

  tags = {
    team = "conformance"
  }
}

resource "aws_instance" "from_template" {
  launch_template {
    id      = aws_launch_template.web.id
    version = aws_launch_template.web.latest_version
  }
  # The instance's tags and user data come from the template, not from this block: the provider
  # plans them away on the next run (so it does against EC2; its documented workaround is this).
  lifecycle {
    ignore_changes = [tags, user_data]
  }
}

output "template_id" {
  value = aws_launch_template.web.id
}

output "latest_version" {
  value = aws_launch_template.web.latest_version
}

output "instance_id" {
  value = aws_instance.from_template.id
}
