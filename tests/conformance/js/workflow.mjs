// The AWS SDK for JavaScript v3 against cloudctl: a user's everyday EC2 workflow, each step's
// outcome printed as one JSON document for tests/conformance/test_js_sdk.py to check.
// Reads AWS_ENDPOINT_URL, AWS_REGION and the user's keys from the environment, as the SDK does.
import {
  EC2Client, DescribeRegionsCommand, DescribeAvailabilityZonesCommand, DescribeImagesCommand,
  DescribeInstanceTypesCommand, CreateKeyPairCommand, DescribeKeyPairsCommand, DeleteKeyPairCommand,
  CreateSecurityGroupCommand, AuthorizeSecurityGroupIngressCommand, DescribeSecurityGroupsCommand,
  DeleteSecurityGroupCommand, RunInstancesCommand, DescribeInstancesCommand, CreateTagsCommand,
  StopInstancesCommand, StartInstancesCommand, TerminateInstancesCommand, CreateVolumeCommand,
  AttachVolumeCommand, DetachVolumeCommand, DeleteVolumeCommand, AllocateAddressCommand,
  AssociateAddressCommand, DisassociateAddressCommand, ReleaseAddressCommand, DescribeAddressesCommand,
  DescribeVpcsCommand, DescribeSubnetsCommand, paginateDescribeInstances,
  waitUntilInstanceRunning, waitUntilInstanceStopped, waitUntilInstanceTerminated,
  waitUntilVolumeAvailable, waitUntilVolumeInUse,
} from "@aws-sdk/client-ec2";

const ec2 = new EC2Client({});   // endpoint, region and credentials from the environment
const steps = [];
const wait = { client: ec2, maxWaitTime: 60, minDelay: 1, maxDelay: 2 };

async function step(name, fn) {
  try {
    const detail = await fn();
    steps.push({ step: name, ok: true, detail: detail ?? null });
    return detail;
  } catch (e) {
    steps.push({ step: name, ok: false, error: `${e.name}: ${e.message}` });
    throw e;
  }
}

try {
  await step("DescribeRegions", async () => (await ec2.send(new DescribeRegionsCommand({}))).Regions.map((r) => r.RegionName));
  await step("DescribeAvailabilityZones", async () =>
    (await ec2.send(new DescribeAvailabilityZonesCommand({}))).AvailabilityZones.map((z) => z.ZoneName));
  const vpc = await step("DescribeVpcs", async () => (await ec2.send(new DescribeVpcsCommand({}))).Vpcs[0].VpcId);
  const subnets = await step("DescribeSubnets", async () =>
    (await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: "vpc-id", Values: [vpc] }] }))).Subnets
      .map((s) => ({ id: s.SubnetId, zone: s.AvailabilityZone, mapPublic: s.MapPublicIpOnLaunch })));
  const image = await step("DescribeImages", async () =>
    (await ec2.send(new DescribeImagesCommand({ Filters: [{ Name: "name", Values: ["cloudctl-blank"] }] }))).Images[0].ImageId);
  await step("DescribeInstanceTypes", async () =>
    (await ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: ["t3.nano"] }))).InstanceTypes[0].VCpuInfo.DefaultVCpus);
  await step("CreateKeyPair", async () => {
    const k = await ec2.send(new CreateKeyPairCommand({ KeyName: "js-key" }));
    return { name: k.KeyName, pem: k.KeyMaterial.startsWith("-----BEGIN") };
  });
  await step("DescribeKeyPairs", async () =>
    (await ec2.send(new DescribeKeyPairsCommand({ KeyNames: ["js-key"] }))).KeyPairs.map((k) => k.KeyName));
  const sg = await step("CreateSecurityGroup", async () =>
    (await ec2.send(new CreateSecurityGroupCommand({ GroupName: "js-sg", Description: "from the JavaScript SDK", VpcId: vpc }))).GroupId);
  await step("AuthorizeSecurityGroupIngress", async () => (await ec2.send(new AuthorizeSecurityGroupIngressCommand({
    GroupId: sg, IpPermissions: [{ IpProtocol: "tcp", FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: "192.0.2.0/24" }] }],
  }))).Return);
  await step("DescribeSecurityGroups", async () =>
    (await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [sg] }))).SecurityGroups[0].IpPermissions
      .map((p) => `${p.IpProtocol}/${p.FromPort}-${p.ToPort}/${p.IpRanges.map((r) => r.CidrIp).join(",")}`));
  const run = await step("RunInstances", async () => {
    const r = await ec2.send(new RunInstancesCommand({
      ImageId: image, InstanceType: "t3.nano", MinCount: 1, MaxCount: 1, KeyName: "js-key", SecurityGroupIds: [sg],
      SubnetId: subnets[0].id, UserData: Buffer.from("#!/bin/sh\necho hello\n").toString("base64"),
      TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: "Name", Value: "js-vm" }] }],
    }));
    return { id: r.Instances[0].InstanceId, state: r.Instances[0].State.Name };
  });
  const iid = run.id;
  await step("waitUntilInstanceRunning", async () => (await waitUntilInstanceRunning(wait, { InstanceIds: [iid] })).state);
  await step("DescribeInstances", async () => {
    const i = (await ec2.send(new DescribeInstancesCommand({ InstanceIds: [iid] }))).Reservations[0].Instances[0];
    return { state: i.State.Name, key: i.KeyName, publicIp: i.PublicIpAddress ?? null, privateIp: i.PrivateIpAddress,
             tags: Object.fromEntries(i.Tags.map((t) => [t.Key, t.Value])), groups: i.SecurityGroups.map((g) => g.GroupId) };
  });
  await step("CreateTags", async () => {
    await ec2.send(new CreateTagsCommand({ Resources: [iid], Tags: [{ Key: "env", Value: "conformance" }] }));
    const f = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: "tag:env", Values: ["conformance"] }] }));
    return f.Reservations.flatMap((r) => r.Instances.map((i) => i.InstanceId));
  });
  await step("paginateDescribeInstances", async () => {
    const seen = [];
    for await (const page of paginateDescribeInstances({ client: ec2, pageSize: 5 }, {})) {
      seen.push(...page.Reservations.flatMap((r) => r.Instances.map((i) => i.InstanceId)));
    }
    return seen;
  });
  const vol = await step("CreateVolume", async () =>
    (await ec2.send(new CreateVolumeCommand({ AvailabilityZone: subnets[0].zone, Size: 1 }))).VolumeId);
  await step("waitUntilVolumeAvailable", async () => (await waitUntilVolumeAvailable(wait, { VolumeIds: [vol] })).state);
  await step("AttachVolume", async () =>
    (await ec2.send(new AttachVolumeCommand({ VolumeId: vol, InstanceId: iid, Device: "/dev/sdf" }))).State);
  await step("waitUntilVolumeInUse", async () => (await waitUntilVolumeInUse(wait, { VolumeIds: [vol] })).state);
  await step("DetachVolume", async () => (await ec2.send(new DetachVolumeCommand({ VolumeId: vol }))).State);
  await step("waitUntilVolumeAvailable (detached)", async () =>
    (await waitUntilVolumeAvailable(wait, { VolumeIds: [vol] })).state);
  await step("DeleteVolume", async () => { await ec2.send(new DeleteVolumeCommand({ VolumeId: vol })); return vol; });
  const eip = await step("AllocateAddress", async () => {
    const a = await ec2.send(new AllocateAddressCommand({ Domain: "vpc" }));
    return { alloc: a.AllocationId, ip: a.PublicIp };
  });
  const assoc = await step("AssociateAddress", async () =>
    (await ec2.send(new AssociateAddressCommand({ AllocationId: eip.alloc, InstanceId: iid }))).AssociationId);
  await step("DescribeAddresses", async () =>
    (await ec2.send(new DescribeAddressesCommand({ AllocationIds: [eip.alloc] }))).Addresses
      .map((a) => ({ ip: a.PublicIp, instance: a.InstanceId })));
  await step("DisassociateAddress", async () => { await ec2.send(new DisassociateAddressCommand({ AssociationId: assoc })); return assoc; });
  await step("ReleaseAddress", async () => { await ec2.send(new ReleaseAddressCommand({ AllocationId: eip.alloc })); return eip.alloc; });
  await step("StopInstances", async () => {
    const r = await ec2.send(new StopInstancesCommand({ InstanceIds: [iid] }));
    return { current: r.StoppingInstances[0].CurrentState.Name, previous: r.StoppingInstances[0].PreviousState.Name };
  });
  await step("waitUntilInstanceStopped", async () => (await waitUntilInstanceStopped(wait, { InstanceIds: [iid] })).state);
  await step("StartInstances", async () =>
    (await ec2.send(new StartInstancesCommand({ InstanceIds: [iid] }))).StartingInstances[0].CurrentState.Name);
  await step("waitUntilInstanceRunning (restarted)", async () =>
    (await waitUntilInstanceRunning(wait, { InstanceIds: [iid] })).state);
  await step("TerminateInstances", async () => {
    const r = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [iid] }));
    return { current: r.TerminatingInstances[0].CurrentState.Name, previous: r.TerminatingInstances[0].PreviousState.Name };
  });
  await step("waitUntilInstanceTerminated", async () =>
    (await waitUntilInstanceTerminated(wait, { InstanceIds: [iid] })).state);
  await step("DeleteSecurityGroup", async () => { await ec2.send(new DeleteSecurityGroupCommand({ GroupId: sg })); return sg; });
  await step("DeleteKeyPair", async () => { await ec2.send(new DeleteKeyPairCommand({ KeyName: "js-key" })); return "js-key"; });
} catch {
  // the failed step is recorded; the report below says which
}
process.stdout.write(JSON.stringify({ steps, iid: steps.find((s) => s.step === "RunInstances")?.detail?.id ?? null }) + "\n");
