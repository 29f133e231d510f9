"""Per-user quotas: instances, vCPUs, volumes (count and GiB), key pairs — EC2's limit errors,
nothing changed by a refused request, room again once resources go."""
from __future__ import annotations

import shutil
from typing import Any

import pytest
from botocore.exceptions import ClientError

LIMITS = {"instances": 5, "vcpus": 6, "volumes": 3, "volume_gib": 10, "key_pairs": 2}


def code_of(e: pytest.ExceptionInfo[ClientError]) -> str:
    return e.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def limited(server_with: Any) -> Any:
    return server_with(limits=LIMITS)


@pytest.fixture(scope="module")
def limited_instances(server_with: Any) -> Any:
    """Instance and vCPU quotas alone: root volumes (8 GiB each here) count in the volume quotas."""
    return server_with(limits={"instances": LIMITS["instances"], "vcpus": LIMITS["vcpus"]})


def live(ec2: Any) -> list[dict[str, Any]]:
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]


def test_instance_and_vcpu_quotas(limited_instances: Any) -> None:
    limited = limited_instances
    ec2 = limited.client(limited.create_user("quota-i"))
    other = limited.client(limited.create_user("quota-other"))
    image = ec2.describe_images()["Images"][0]["ImageId"]
    small = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=10, InstanceType="t3.nano")["Instances"]
    assert len(small) == 5                    # MaxCount is cut to what the quota allows
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano")
    assert code_of(e) == "InstanceLimitExceeded"
    assert len(live(ec2)) == 5
    gone = [i["InstanceId"] for i in small[:4]]
    ec2.terminate_instances(InstanceIds=gone)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=gone, WaiterConfig={"Delay": 0.2})
    # 1 vCPU in use, 5 left: two t3.small (2 vCPUs each) fit, a third would not
    two = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.small")["Instances"]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.small")
    assert code_of(e) == "VcpuLimitExceeded"
    assert len(live(ec2)) == 3
    # quotas are per user
    assert len(other.run_instances(ImageId=image, MinCount=5, MaxCount=5, InstanceType="t3.nano")["Instances"]) == 5
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in two + small[4:]])


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_volume_quotas(limited: Any) -> None:
    ec2 = limited.client(limited.create_user("quota-v"))
    a = ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=6)["VolumeId"]
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=5)      # 11 GiB > 10
    assert code_of(e) == "VolumeLimitExceeded"
    b = ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=2)["VolumeId"]
    c = ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=1)["VolumeId"]
    with pytest.raises(ClientError) as e:
        ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=1)      # a fourth volume
    assert code_of(e) == "VolumeLimitExceeded"
    image = ec2.describe_images()["Images"][0]["ImageId"]
    with pytest.raises(ClientError) as e:   # launch volumes count too
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}])
    assert code_of(e) == "VolumeLimitExceeded"
    assert live(ec2) == []
    assert len(ec2.describe_volumes()["Volumes"]) == 3
    ec2.get_waiter("volume_available").wait(VolumeIds=[a, b, c], WaiterConfig={"Delay": 0.2})
    ec2.delete_volume(VolumeId=a)
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[a], WaiterConfig={"Delay": 0.2})
    d = ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=7)["VolumeId"]
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == {b, c, d}


def test_key_pair_quota(limited: Any) -> None:
    ec2 = limited.client(limited.create_user("quota-k"))
    ec2.create_key_pair(KeyName="one")
    ec2.create_key_pair(KeyName="two")
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName="three")
    assert code_of(e) == "ResourceLimitExceeded"
    assert sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]) == ["one", "two"]
    ec2.delete_key_pair(KeyName="one")
    ec2.create_key_pair(KeyName="three")
