"""Domain XML from the admin's templates, filled per instance."""
from __future__ import annotations

from pathlib import Path
from string import Template

from ..config import Config, InstanceType
from ..drivers.hypervisor.base import METADATA_NS, disk_xml
from ..store.records import Instance
from ..xmltext import escape
from .network import tap_name

# A template compiled: literal text, and (name, the placeholder's own text) for each placeholder,
# which stays as written when nothing fills it (string.Template.safe_substitute's rule).
_Part = str | tuple[str, str]
#: Templates partly filled per (template, type, image path, boot files) kept at once: few of each.
_PARTIALS_MAX = 256


def _compile(tpl: Template) -> list[_Part]:
    """`tpl` as parts, so filling it is a join, not a regular-expression pass with a Python call
    per placeholder (`safe_substitute`). `$$` is a literal `$`; an invalid `$` stays as written."""
    parts: list[_Part] = []
    text = tpl.template
    at = 0
    for mo in tpl.pattern.finditer(text):
        parts.append(text[at:mo.start()])
        at = mo.end()
        named = mo.group("named") or mo.group("braced")
        if named is not None:
            parts.append((named, mo.group()))
        elif mo.group("escaped") is not None:
            parts.append(tpl.delimiter)
        else:
            parts.append(mo.group())
    parts.append(text[at:])
    return _fill(parts, {})


def _fill(parts: list[_Part], values: dict[str, object]) -> list[_Part]:
    """The parts with `values` put in (as `str(value)`), adjacent literals joined."""
    out: list[_Part] = []
    for p in parts:
        if type(p) is tuple and p[0] in values:
            p = str(values[p[0]])
        if type(p) is str:
            if not p:
                continue
            if out and type(out[-1]) is str:
                out[-1] += p   # type: ignore[operator]
                continue
        out.append(p)
    return out


class DomainRenderer:
    """Fills the admin's domain templates. What is the same for every instance of one template,
    type, image and boot files (vCPUs, memory, disk size, image path, type name, kernel line) is
    filled once and kept; a launch fills in only its own fields (name, uuid, MAC, address, NICs,
    disks, files). Same text as `Template.safe_substitute` with every field at once."""

    def __init__(self, config: Config, controller_id: str = "") -> None:
        self.config = config
        self.controller_id = controller_id
        self._templates: dict[Path, Template] = {}
        self._compiled: dict[Path, list[_Part]] = {}
        self._partials: dict[tuple[object, ...], list[_Part]] = {}
        # The controller's id: several controllers may share a hypervisor (and tests share one
        # libvirtd); each removes only the orphans it made itself.
        self._metadata = (f"<metadata><cloudctl:instance xmlns:cloudctl='{METADATA_NS}' "
                          f"controller='{escape(controller_id)}'>")

    def _template(self, path: Path) -> Template:
        # Read once: a template edited on disk takes effect at the next start.
        t = self._templates.get(path)
        if t is None:
            t = self._templates[path] = Template(path.read_text())
        return t

    def template_text(self, type_name: str) -> str:
        return self._template(self.config.template_for(type_name)).template

    def _partial(self, itype: InstanceType, type_name: str, image_path: str, kernel: Path | None,
                 initrd: Path | None) -> list[_Part]:
        path = self.config.template_for(type_name)
        key = (path, type_name, itype.vcpus, itype.memory_mib, itype.disk_gib, image_path, kernel, initrd)
        parts = self._partials.get(key)
        if parts is not None:
            return parts
        compiled = self._compiled.get(path)
        if compiled is None:
            compiled = self._compiled[path] = _compile(self._template(path))
        boot = ""
        if kernel is not None:
            boot = f"<kernel>{escape(str(kernel))}</kernel>"
            if initrd is not None:
                boot += f"<initrd>{escape(str(initrd))}</initrd>"
            boot += f"<cmdline>{escape(self.config.kernel_cmdline)}</cmdline>"
        parts = _fill(compiled, {"vcpus": itype.vcpus, "memory_mib": itype.memory_mib, "disk_gib": itype.disk_gib,
                                 "image_path": escape(image_path), "instance_type": escape(type_name), "boot": boot})
        if len(self._partials) >= _PARTIALS_MAX:
            self._partials.clear()
        self._partials[key] = parts
        return parts

    def render(self, inst: Instance, itype: InstanceType, image_path: str, files: dict[str, str],
               kernel: Path | None = None, initrd: Path | None = None,
               disks: list[tuple[str, str]] | None = None, interfaces: str = "") -> str:
        """The domain XML; `files` are the prepared per-instance paths, `disks` extra volumes,
        `interfaces` the NICs' XML (interface_xml)."""
        parts = self._partial(itype, inst.instance_type, image_path, kernel, initrd)
        iid = inst.id
        values = {"name": iid, "uuid": inst.uuid, "mac": inst.mac or "", "private_ip": inst.private_ip or "",
                  "metadata": f"{self._metadata}{iid}</cloudctl:instance></metadata>",
                  "volumes": "".join(disk_xml(path, dev) for path, dev in disks) if disks else "",
                  "interface": interfaces, "tap": tap_name(iid), **files}
        return "".join([p if type(p) is str else (str(values[p[0]]) if p[0] in values else p[1])  # type: ignore[index]
                        for p in parts])


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
