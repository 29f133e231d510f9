"""Domain XML from the admin's templates, filled per instance."""
from __future__ import annotations

from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from ..config import Config, InstanceType
from ..drivers.hypervisor.base import METADATA_NS, disk_xml
from ..store.records import Instance
from .network import tap_name


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
               disks: list[tuple[str, str]] | None = None, interfaces: str = "") -> str:
        """The domain XML; `files` are the prepared per-instance paths, `disks` extra volumes,
        `interfaces` the NICs' XML (interface_xml)."""
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
            metadata=metadata, boot=boot, volumes=extra, interface=interfaces,
            tap=tap_name(inst.id), **files)


def interface_xml(mac: str, bridge: str | None, tap: str | None = None, extra: str = "") -> str:
    """One guest NIC: on a Linux bridge (guests on Open vSwitch reach it through a per-VLAN
    Linux bridge, see drivers/hypervisor/ovs_plug.py), or a user-mode NIC when the network
    names no bridge (needs no host setup). `tap` fixes the host-side name so firewalls can
    name it."""
    m = f"<mac address='{escape(mac)}'/>"
    if bridge is None:
        return f"<interface type='user'>{m}<model type='virtio'/>{extra}</interface>"
    target = f"<target dev='{escape(tap)}'/>" if tap else ""
    return (f"<interface type='bridge'>{m}<source bridge='{escape(bridge, {chr(39): '&apos;'})}'/>"
            f"{target}<model type='virtio'/>{extra}</interface>")
