# The hashicorp/aws provider with its default settings: no skip_credentials_validation,
# skip_requesting_account_id or skip_metadata_api_check, so it asks STS who the caller is (and IAM,
# for the account) before anything else, at the same endpoint as EC2. skip_region_validation stays:
# the provider refuses any region name outside AWS's own list ("invalid AWS Region: cloudctl-1").
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "endpoint" {
  type = string
}

provider "aws" {
  region = "cloudctl-1"
  endpoints {
    ec2 = var.endpoint
    sts = var.endpoint
    iam = var.endpoint
  }
  skip_region_validation = true
}

data "aws_caller_identity" "me" {}

data "aws_availability_zones" "all" {}

resource "aws_key_pair" "tf" {
  key_name   = "tf-default-key"
  public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQUoMHK2qGlpQkQFw1Ku8RA6x+eNSKBobkEetv9iZ5Q tf-conformance"
}

output "account" {
  value = data.aws_caller_identity.me.account_id
}

output "zones" {
  value = data.aws_availability_zones.all.names
}
