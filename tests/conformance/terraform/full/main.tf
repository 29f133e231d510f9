# Terraform with the hashicorp/aws provider against cloudctl: a small deployment and the data
# sources people start from. tests/conformance/test_terraform.py runs init, plan, apply, plan
# (no changes), destroy. The keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
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

data "aws_availability_zones" "all" {}

data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
  filter {
    name   = "availability-zone"
    values = [data.aws_availability_zones.all.names[0]]
  }
}

data "aws_ami" "blank" {
  most_recent = true
  owners      = ["cloudctl"]
  filter {
    name   = "name"
    values = ["cloudctl-blank"]
  }
}

data "aws_security_group" "default" {
  vpc_id = data.aws_vpc.default.id
  name   = "default"
}

resource "aws_key_pair" "tf" {
  key_name   = "tf-key"
  public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQUoMHK2qGlpQkQFw1Ku8RA6x+eNSKBobkEetv9iZ5Q tf-conformance"
}

resource "aws_security_group" "web" {
  name        = "tf-web"
  description = "HTTP from anywhere, SSH from the admin network"
  vpc_id      = data.aws_vpc.default.id

  ingress {
    protocol    = "tcp"
    from_port   = 80
    to_port     = 80
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    protocol        = "tcp"
    from_port       = 22
    to_port         = 22
    cidr_blocks     = ["192.0.2.0/24"]
    security_groups = [data.aws_security_group.default.id]
  }
  egress {
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    cidr_blocks = ["0.0.0.0/0"]
  }
  tags = {
    Name = "tf-web"
  }
}

resource "aws_instance" "vm" {
  ami                    = data.aws_ami.blank.id
  instance_type          = "t3.nano"
  key_name               = aws_key_pair.tf.key_name
  subnet_id              = data.aws_subnets.default.ids[0]
  vpc_security_group_ids = [aws_security_group.web.id]
  user_data              = "#!/bin/sh\necho hello from terraform\n"

  root_block_device {
    volume_size = 2
    volume_type = "gp3"
    tags = {
      Name = "tf-root"
    }
  }
  tags = {
    Name = "tf-vm"
    role = "conformance"
  }
}

resource "aws_ebs_volume" "data" {
  availability_zone = data.aws_availability_zones.all.names[0]   # the instance's: made alongside it
  size              = 1
  tags = {
    Name = "tf-data"
  }
}

resource "aws_volume_attachment" "data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data.id
  instance_id = aws_instance.vm.id
}

resource "aws_eip" "vm" {
  domain   = "vpc"
  instance = aws_instance.vm.id
  tags = {
    Name = "tf-eip"
  }
}

output "instance_id" {
  value = aws_instance.vm.id
}

output "public_ip" {
  value = aws_eip.vm.public_ip
}

output "zones" {
  value = data.aws_availability_zones.all.names
}

output "subnets" {
  value = data.aws_subnets.default.ids
}

output "vpc_cidr" {
  value = data.aws_vpc.default.cidr_block
}
