"""OpenNebula's XML-RPC as its users drive it with pyone: the VM state machine, the user template
kept, template syntax errors, saved templates, disks (cloudctl volumes) and monitoring.

Every document answered is also parsed by pyone's generated bindings with their message
collector, which must stay empty (pyone prints those as warnings), and Python warnings are errors."""
from __future__ import annotations

import xmlrpc.client
from typing import Any

import pyone
import pytest
from pyone.bindings import supbind

from support import wait_state, wait_until

# Warnings are errors; the test harness's own (a server's log file closed late) are not pyone's.
pytestmark = [pytest.mark.filterwarnings("error"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture(scope="module")
def one_server(server_with: Any) -> Any:
    s = server_with(xmlrpc={}, monitor={"interval_s": 1})
    s.one_url = s.url("xmlrpc") + "/RPC2"
    return s


@pytest.fixture(scope="module")
def dora(one_server: Any) -> dict[str, str]:
    return one_server.create_user("dora")


@pytest.fixture(scope="module")
def one(one_server: Any, dora: dict[str, str]) -> Any:
    return pyone.OneServer(one_server.one_url, session=f"dora:{dora['SecretAccessKey']}")


@pytest.fixture(scope="module")
def ec2(one_server: Any, dora: dict[str, str]) -> Any:
    return one_server.client(dora)


@pytest.fixture(scope="module")
def image_id(one: Any) -> int:
    return int(next(i for i in one.imagepool.info(-2, -1, -1).IMAGE if i.NAME == "cloudctl-blank").ID)


def strict(one_server: Any, dora: dict[str, str], method: str, *args: Any) -> Any:
    """Call `method` without pyone's client and parse its document as pyone's bindings do, with
    the collector they report warnings from: no message may come out."""
    proxy = xmlrpc.client.ServerProxy(one_server.one_url)
    ok, body, code = getattr(proxy, method)(f"dora:{dora['SecretAccessKey']}", *args)
    assert ok, (method, body, code)
    collector = supbind.GdsCollector_()
    root = supbind.parsexmlstring_(body.encode(), None)
    _, cls = supbind.get_root_tag(root)
    assert cls is not None, f"pyone has no binding for <{root.tag}>"
    obj = cls.factory()
    obj.build(root, gds_collector_=collector)
    assert collector.get_messages() == [], collector.get_messages()
    return obj


def _vm(one: Any, ec2: Any, image_id: int, extra: str = "") -> tuple[int, str]:
    vm_id = one.vm.allocate('CPU = 1\nMEMORY = 512\nDISK = [ IMAGE_ID = "%d" ]\n%s' % (image_id, extra), False)
    iid = one.vm.info(vm_id).DEPLOY_ID
    wait_state(ec2, [iid], "running")
    return vm_id, iid


def test_actions_follow_the_vm_state_machine(one: Any, ec2: Any, image_id: int) -> None:
    vm_id, iid = _vm(one, ec2, image_id)
    # resume on a running VM: OpenNebula's "action not allowed in this state" (ACTION, 0x0800)
    with pytest.raises(pyone.OneActionException, match=r'"resume": Could not resume VM \d+, wrong state RUNNING'):
        one.vm.action("resume", vm_id)
    with pytest.raises(pyone.OneActionException, match="wrong state RUNNING"):
        one.vm.action("release", vm_id)                        # release: only from HOLD
    with pytest.raises(pyone.OneActionException, match="Invalid action"):
        one.vm.action("fly", vm_id)
    assert one.vm.info(vm_id).STATE == 3                       # refusals changed nothing
    one.vm.action("poweroff", vm_id)
    wait_state(ec2, [iid], "stopped")
    assert one.vm.info(vm_id).STATE == 8                       # POWEROFF
    for action in ("poweroff", "reboot", "stop"):
        with pytest.raises(pyone.OneActionException, match="wrong state POWEROFF"):
            one.vm.action(action, vm_id)
    one.vm.action("resume", vm_id)
    wait_state(ec2, [iid], "running")
    one.vm.action("reboot", vm_id)
    one.vm.action("terminate", vm_id)
    wait_state(ec2, [iid], "terminated")
    with pytest.raises(pyone.OneActionException, match="wrong state DONE"):
        one.vm.action("terminate-hard", vm_id)


def test_info_keeps_the_template_given_at_allocate(one: Any, ec2: Any, image_id: int, one_server: Any,
                                                  dora: dict[str, str]) -> None:
    vm_id, iid = _vm(one, ec2, image_id,
                     'CONTEXT = [ NETWORK = "YES", SSH_PUBLIC_KEY = "ssh-ed25519 AAAA dora@x" ]\n'
                     'GRAPHICS = [ TYPE = "VNC", LISTEN = "0.0.0.0" ]\nOS = [ ARCH = "x86_64", BOOT = "disk0" ]\n'
                     'LOGO = "images/logos/debian.png"\nDISK = [ IMAGE_ID = "%d", DEV_PREFIX = "vd" ]' % image_id)
    t = one.vm.info(vm_id).TEMPLATE
    assert t["CONTEXT"]["SSH_PUBLIC_KEY"] == "ssh-ed25519 AAAA dora@x" and t["CONTEXT"]["NETWORK"] == "YES"
    assert t["GRAPHICS"] == {"TYPE": "VNC", "LISTEN": "0.0.0.0"}
    assert t["OS"]["BOOT"] == "disk0" and t["LOGO"] == "images/logos/debian.png"
    disks = t["DISK"] if isinstance(t["DISK"], list) else [t["DISK"]]
    assert disks[0]["DISK_ID"] == "0" and disks[0]["IMAGE_ID"] == str(image_id)
    assert t["CPU"] == "1" and int(t["MEMORY"]) >= 512      # cloudctl's own figures stay
    strict(one_server, dora, "one.vm.info", vm_id)
    strict(one_server, dora, "one.vmpool.info", -2, -1, -1, -1)
    one.vm.action("terminate-hard", vm_id)
    wait_state(ec2, [iid], "terminated")


def test_template_syntax_error_and_no_disk(one: Any, image_id: int) -> None:
    before = len(one.vmpool.info(-2, -1, -1, -2).VM or [])
    for bad in ('CPU = [ oops', 'CPU = 1\n<MEMORY> = 2', 'NAME = "unterminated', '1CPU = 2'):
        with pytest.raises(pyone.OneInternalException, match=r"\[one.vm.allocate\] .*Parse error"):
            one.vm.allocate(bad + '\nDISK = [ IMAGE_ID = "%d" ]' % image_id, False)
    with pytest.raises(pyone.OneInternalException, match="needs DISK"):
        one.vm.allocate('NAME = "empty"\nCPU = 1\nMEMORY = 128', False)
    with pytest.raises(pyone.OneInternalException, match="Parse error"):
        one.template.allocate('NAME = [ x')
    assert len(one.vmpool.info(-2, -1, -1, -2).VM or []) == before


def test_templates_allocate_info_instantiate_delete(one: Any, ec2: Any, image_id: int, one_server: Any,
                                                   dora: dict[str, str], server_with: Any) -> None:
    body = ('NAME = "web"\nCPU = 1\nMEMORY = 512\nDISK = [ IMAGE_ID = "%d" ]\n'
            'CONTEXT = [ START_SCRIPT = "echo hi" ]\nDESCRIPTION = "a web server"' % image_id)
    tid = one.template.allocate(body)
    assert isinstance(tid, int)
    with pytest.raises(pyone.OneApiException):
        one.template.allocate(body)                            # the name is taken
    info = one.template.info(tid)
    assert (info.NAME, info.UNAME) == ("web", "dora")
    assert info.TEMPLATE["CONTEXT"]["START_SCRIPT"] == "echo hi"
    assert tid in [t.ID for t in one.templatepool.info(-2, -1, -1).VMTEMPLATE]
    strict(one_server, dora, "one.template.info", tid, False, False)
    strict(one_server, dora, "one.templatepool.info", -2, -1, -1)

    # Another user sees none of it.
    eve = one_server.create_user("eve")
    other = pyone.OneServer(one_server.one_url, session=f"eve:{eve['SecretAccessKey']}")
    assert not (other.templatepool.info(-2, -1, -1).VMTEMPLATE or [])
    with pytest.raises(pyone.OneNoExistsException):
        other.template.info(tid)
    with pytest.raises(pyone.OneNoExistsException):
        other.template.instantiate(tid, "x", False, "", False)

    vm_id = one.template.instantiate(tid, "web-1", False, 'MEMORY = 1024', False)
    vm = one.vm.info(vm_id)
    [inst] = wait_state(ec2, [vm.DEPLOY_ID], "running")
    assert vm.NAME == "web-1" and int(vm.TEMPLATE["MEMORY"]) >= 1024
    assert vm.TEMPLATE["DESCRIPTION"] == "a web server"
    one.template.delete(tid, False)
    with pytest.raises(pyone.OneNoExistsException):
        one.template.info(tid)
    assert one.vm.info(vm_id).STATE == 3                       # the VM outlives its template
    one.vm.action("terminate-hard", vm_id)
    wait_state(ec2, [inst["InstanceId"]], "terminated")


def test_templates_and_given_templates_survive_kill_9(new_server: Any) -> None:
    s = new_server(xmlrpc={})
    user = s.create_user("fay")
    url, session = s.url("xmlrpc") + "/RPC2", f"fay:{user['SecretAccessKey']}"
    one = pyone.OneServer(url, session=session)
    image = int(next(i for i in one.imagepool.info(-2, -1, -1).IMAGE if i.NAME == "cloudctl-blank").ID)
    tid = one.template.allocate('NAME = "kept"\nCPU = 1\nMEMORY = 256\nDISK = [ IMAGE_ID = "%d" ]' % image)
    vm_id = one.template.instantiate(tid, "", False, 'GRAPHICS = [ TYPE = "SPICE" ]', False)
    s.kill()                                                   # acknowledged, then SIGKILL
    s.start()
    one = pyone.OneServer(url, session=session)
    assert one.template.info(tid).NAME == "kept"
    assert one.vm.info(vm_id).TEMPLATE["GRAPHICS"] == {"TYPE": "SPICE"}


def test_attach_and_detach_a_volume(one: Any, ec2: Any, image_id: int, one_server: Any,
                                    dora: dict[str, str]) -> None:
    vm_id, iid = _vm(one, ec2, image_id)
    vol = ec2.create_volume(AvailabilityZone=ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]
                            ["Instances"][0]["Placement"]["AvailabilityZone"], Size=1)["VolumeId"]
    wait_until(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available")
    assert one.vm.attach(vm_id, 'DISK = [ VOLUME_ID = "%s" ]' % vol) == vm_id
    wait_until(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Attachments"][:1]
               and ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Attachments"][0]["State"] == "attached")
    one.vm.attach(vm_id, 'DISK = [ SIZE = "1536", TARGET = "vdd" ]')   # a new 2 GiB volume
    disks = one.vm.info(vm_id).TEMPLATE["DISK"]
    assert isinstance(disks, list) and len(disks) == 3
    by_vol = {d.get("EC2_VOLUME_ID"): d for d in disks}
    assert by_vol[vol]["TARGET"] == "vdb"
    new = next(d for d in disks if d.get("TARGET") == "vdd")
    assert new["SIZE"] == "2048"
    strict(one_server, dora, "one.vm.info", vm_id)
    with pytest.raises(pyone.OneActionException, match="does not exist"):
        one.vm.detach(vm_id, 0)                                # the root disk is not a volume
    with pytest.raises(pyone.OneApiException, match="already attached"):
        one.vm.attach(vm_id, 'DISK = [ VOLUME_ID = "%s" ]' % vol)
    one.vm.detach(vm_id, int(by_vol[vol]["DISK_ID"]))
    wait_until(lambda: ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available")
    assert vol not in {d.get("EC2_VOLUME_ID") for d in
                       (lambda x: x if isinstance(x, list) else [x])(one.vm.info(vm_id).TEMPLATE["DISK"])}
    one.vm.action("terminate-hard", vm_id)
    wait_state(ec2, [iid], "terminated")
    with pytest.raises(pyone.OneActionException, match="wrong state DONE"):
        one.vm.attach(vm_id, 'DISK = [ VOLUME_ID = "%s" ]' % vol)


def test_monitoring(one: Any, ec2: Any, image_id: int, one_server: Any, dora: dict[str, str]) -> None:
    vm_id, iid = _vm(one, ec2, image_id)
    wait_until(lambda: bool(one.vm.monitoring(vm_id).MONITORING))
    m = one.vm.monitoring(vm_id).MONITORING[0]
    assert m.ID == vm_id and m.TIMESTAMP > 0 and m.MEMORY > 0 and m.CPU >= 0
    strict(one_server, dora, "one.vm.monitoring", vm_id)
    one.vm.action("terminate-hard", vm_id)
    wait_state(ec2, [iid], "terminated")
    assert not one.vm.monitoring(vm_id).MONITORING           # nothing to monitor once DONE
    with pytest.raises(pyone.OneNoExistsException):
        one.vm.monitoring(999999)
