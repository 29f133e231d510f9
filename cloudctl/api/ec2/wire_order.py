"""The order EC2 writes the members of some response structures in, where botocore's model order
differs and a client reads by position.

botocore reads members by name, but other clients do not all: libcloud takes an instance's new
state from the first `<name>` under TerminateInstances' item, so `currentState` must come before
`previousState`, as in EC2. The serializer (`protocol.py`) writes a shape listed here in this
order whatever order the handler's dict has; members not listed follow, in the dict's order.
Shapes not listed are written in the handler's order. The orders are those of the examples in
the EC2 API reference (DescribeInstances, TerminateInstances, DescribeNetworkInterfaces).
"""
from __future__ import annotations

AWS_ORDER: dict[str, tuple[str, ...]] = {
    # TerminateInstances, StopInstances, StartInstances: instanceId, currentState, previousState
    "InstanceStateChange": ("InstanceId", "CurrentState", "PreviousState"),
    "InstanceState": ("Code", "Name"),
    "Reservation": ("ReservationId", "OwnerId", "RequesterId", "Groups", "Instances"),
    "Instance": (
        "InstanceId", "ImageId", "State", "PrivateDnsName", "PublicDnsName", "StateTransitionReason", "KeyName",
        "AmiLaunchIndex", "ProductCodes", "InstanceType", "LaunchTime", "Placement", "KernelId", "RamdiskId",
        "Platform", "Monitoring", "SubnetId", "VpcId", "PrivateIpAddress", "PublicIpAddress", "SourceDestCheck",
        "SecurityGroups", "StateReason", "Architecture", "RootDeviceType", "RootDeviceName", "BlockDeviceMappings",
        "VirtualizationType", "ClientToken", "Tags", "Hypervisor", "NetworkInterfaces", "IamInstanceProfile",
        "EbsOptimized", "EnaSupport", "CpuOptions", "CapacityReservationSpecification", "HibernationOptions",
        "EnclaveOptions", "MetadataOptions", "MaintenanceOptions", "CurrentInstanceBootMode", "PlatformDetails",
        "UsageOperation", "UsageOperationUpdateTime", "PrivateDnsNameOptions"),
    "InstanceNetworkInterface": (
        "NetworkInterfaceId", "SubnetId", "VpcId", "Description", "OwnerId", "Status", "MacAddress",
        "PrivateIpAddress", "PrivateDnsName", "SourceDestCheck", "Groups", "Attachment", "Association",
        "PrivateIpAddresses", "Ipv6Addresses", "InterfaceType"),
    "InstanceNetworkInterfaceAttachment": (
        "AttachmentId", "DeviceIndex", "Status", "AttachTime", "DeleteOnTermination", "NetworkCardIndex"),
    "InstanceNetworkInterfaceAssociation": ("PublicIp", "PublicDnsName", "IpOwnerId"),
    "InstancePrivateIpAddress": ("PrivateIpAddress", "PrivateDnsName", "Primary", "Association"),
    "NetworkInterface": (
        "NetworkInterfaceId", "SubnetId", "VpcId", "AvailabilityZone", "Description", "OwnerId", "RequesterId",
        "RequesterManaged", "Status", "MacAddress", "PrivateIpAddress", "PrivateDnsName", "SourceDestCheck",
        "Groups", "Attachment", "Association", "TagSet", "PrivateIpAddresses", "Ipv6Addresses", "InterfaceType"),
    "NetworkInterfaceAttachment": (
        "AttachmentId", "InstanceId", "InstanceOwnerId", "DeviceIndex", "Status", "AttachTime",
        "DeleteOnTermination", "NetworkCardIndex"),
    "NetworkInterfaceAssociation": ("PublicIp", "PublicDnsName", "IpOwnerId", "AllocationId", "AssociationId"),
    "NetworkInterfacePrivateIpAddress": ("PrivateIpAddress", "PrivateDnsName", "Primary", "Association"),
}
