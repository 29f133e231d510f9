# Terraform's aws_launch_template + aws_elb + aws_autoscaling_group against cloudctl: a group of
# web servers from a template, behind a classic load balancer. tests/conformance/test_terraform.py
# runs init, plan, apply, plan (no changes), destroy, and checks the result through boto3.
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
  description = "cloudctl's endpoint (EC2, AutoScaling and ELB alike), e.g. http://127.0.0.1:4567"
}

provider "aws" {
  region = "cloudctl-1"
  endpoints {
    ec2         = var.endpoint
    autoscaling = var.endpoint
    elb         = var.endpoint
  }
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

data "aws_availability_zones" "all" {}

data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
}

data "aws_security_group" "default" {
  vpc_id = data.aws_vpc.default.id
  name   = "default"
}

data "aws_ami" "blank" {
  most_recent = true
  owners      = ["cloudctl"]
  filter {
    name   = "name"
    values = ["cloudctl-blank"]
  }
}

resource "aws_launch_template" "web" {
  name_prefix   = "tf-asg-"
  image_id      = data.aws_ami.blank.id
  instance_type = "t3.nano"
  user_data     = base64encode("#!/bin/sh\nhttpd -p 8080 -h /srv\n")
}

resource "aws_elb" "web" {
  name               = "tf-web"
  subnets            = data.aws_subnets.default.ids
  security_groups    = [data.aws_security_group.default.id]

  listener {
    lb_port           = 80
    lb_protocol       = "http"
    instance_port     = 8080
    instance_protocol = "http"
  }

  health_check {
    target              = "HTTP:8080/"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  idle_timeout                = 120
  connection_draining         = true
  connection_draining_timeout = 30

  tags = {
    Name = "tf-web"
  }
}

resource "aws_autoscaling_group" "web" {
  name                      = "tf-web"
  min_size                  = 1
  max_size                  = 4
  desired_capacity          = 2
  vpc_zone_identifier       = data.aws_subnets.default.ids
  load_balancers            = [aws_elb.web.name]
  health_check_type         = "EC2"
  health_check_grace_period = 60
  wait_for_capacity_timeout = "3m"

  launch_template {
    id      = aws_launch_template.web.id
    version = "$Latest"
  }

  tag {
    key                 = "Name"
    value               = "tf-web"
    propagate_at_launch = true
  }
  tag {
    key                 = "team"
    value               = "conformance"
    propagate_at_launch = false
  }
}

output "group" {
  value = aws_autoscaling_group.web.name
}

output "elb" {
  value = aws_elb.web.name
}

output "elb_dns" {
  value = aws_elb.web.dns_name
}

output "template_id" {
  value = aws_launch_template.web.id
}

output "subnets" {
  value = data.aws_subnets.default.ids
}
