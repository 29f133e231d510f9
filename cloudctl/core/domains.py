"""Domain XML from the admin's templates, filled per instance."""
from __future__ import annotations

from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from ..config import Config, InstanceType
from ..drivers.hypervisor.base import METADATA_NS, disk_xml
from ..store.records import Instance
from .network import Subnet, tap_name


class DomainRenderer:
    def __init__(self, config: Config, controller_id: str = "") -> None:
        self.config = config
        self.controller_id = controller_id
        self._templates: dict[Path, Template] = {}

    def _template(self, path: Path) -> Template:
        # Read once: a template edited on disk takes effect at the next start.
        t = self._templates.get(path)
        if t is None:
            t = self._templates[path] = Template(path.read_text())
        return t

    def template_text(self, type_name: str) -> str:
        return self._template(self.config.template_for(type_name)).template

    def render(self, inst: Instance, itype: InstanceType, image_path: str, files: dict[str, str],
               kernel: Path | None = None, initrd: Path | None = None,
               disks: list[tuple[str, str]] | None = None, subnet: Subnet | None = None,
               nic_extra: str = "") -> str:
        """The domain XML; `files` are the prepared per-instance paths, `disks` extra volumes,
        `nic_extra` XML placed inside the NIC (e.g. a firewall's filterref)."""
        tpl = self._template(self.config.template_for(inst.instance_type))
        # The controller's id: several controllers may share a hypervisor (and tests share one
        # libvirtd); each removes only the orphans it made itself.
        metadata = (f"<metadata><cloudctl:instance xmlns:cloudctl='{METADATA_NS}' "
                    f"controller='{escape(self.controller_id)}'>{inst.id}</cloudctl:instance></metadata>")
        boot = ""
        if kernel is not None:
            boot = f"<kernel>{escape(str(kernel))}</kernel>"
            if initrd is not None:
                boot += f"<initrd>{escape(str(initrd))}</initrd>"
            boot += f"<cmdline>{escape(self.config.kernel_cmdline)}</cmdline>"
        extra = "".join(disk_xml(path, dev) for path, dev in disks or ())
        return tpl.safe_substitute(
            name=inst.id, uuid=inst.uuid, vcpus=itype.vcpus, memory_mib=itype.memory_mib,
            disk_gib=itype.disk_gib, image_path=escape(image_path), mac=inst.mac or "",
            private_ip=inst.private_ip or "", instance_type=escape(inst.instance_type),
            metadata=metadata, boot=boot, volumes=extra, interface=interface_xml(inst, subnet, nic_extra),
            tap=tap_name(inst.id), **files)


def interface_xml(inst: Instance, subnet: Subnet | None, extra: str = "") -> str:
    """The guest's NIC: on the subnet's bridge (Linux or Open vSwitch, with its VLAN tag), or a
    user-mode NIC when the network names no bridge (needs no host setup)."""
    mac = f"<mac address='{escape(inst.mac or '')}'/>"
    if subnet is None or subnet.bridge is None:
        return f"<interface type='user'>{mac}<model type='virtio'/>{extra}</interface>"
    ovs = ""
    if subnet.bridge_type == "openvswitch":
        ovs = "<virtualport type='openvswitch'/>"
        if subnet.vlan is not None:
            ovs += f"<vlan><tag id='{int(subnet.vlan)}'/></vlan>"
    return (f"<interface type='bridge'>{mac}<source bridge='{escape(subnet.bridge, {chr(39): '&apos;'})}'/>"
            f"{ovs}<target dev='{tap_name(inst.id)}'/><model type='virtio'/>{extra}</interface>")
