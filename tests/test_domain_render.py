"""The domain XML a launch gets: templates filled from parts kept per template, type, image and
boot files must give exactly what `string.Template.safe_substitute` with every field at once gave."""
from __future__ import annotations

from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from cloudctl.config import load_config
from cloudctl.core.domains import DomainRenderer
from cloudctl.core.network import tap_name
from cloudctl.drivers.hypervisor.base import METADATA_NS, disk_xml
from cloudctl.store.records import Instance

from support import write_config

TEMPLATE = """<domain type='test'><name>$name</name><uuid>${uuid}</uuid>$metadata
<memory unit='MiB'>$memory_mib</memory><vcpu>${vcpus}</vcpu> $$5 costs $ and ${unknown} $unknown2 $$name
<os>$boot</os><disk size='$disk_gib'><source file='$image_path'/></disk>$volumes
<type>$instance_type</type>$interface<mac>$mac</mac><ip>$private_ip</ip><tap>$tap</tap>
<dir>$instance_dir</dir><log>${console_log}</log><root>$root_disk</root>$</domain>"""


def _reference(r: DomainRenderer, inst: Instance, image_path: str, files: dict[str, str], kernel: Path | None,
               initrd: Path | None, disks: list[tuple[str, str]], nics: str) -> str:
    """What main rendered (18e9fc1's DomainRenderer.render)."""
    itype = r.config.instance_types[inst.instance_type]
    metadata = (f"<metadata><cloudctl:instance xmlns:cloudctl='{METADATA_NS}' "
                f"controller='{escape(r.controller_id)}'>{inst.id}</cloudctl:instance></metadata>")
    boot = ""
    if kernel is not None:
        boot = f"<kernel>{escape(str(kernel))}</kernel>"
        if initrd is not None:
            boot += f"<initrd>{escape(str(initrd))}</initrd>"
        boot += f"<cmdline>{escape(r.config.kernel_cmdline)}</cmdline>"
    return Template(TEMPLATE).safe_substitute(
        name=inst.id, uuid=inst.uuid, vcpus=itype.vcpus, memory_mib=itype.memory_mib, disk_gib=itype.disk_gib,
        image_path=escape(image_path), mac=inst.mac or "", private_ip=inst.private_ip or "",
        instance_type=escape(inst.instance_type), metadata=metadata, boot=boot,
        volumes="".join(disk_xml(p, d) for p, d in disks), interface=nics, tap=tap_name(inst.id), **files)


def test_rendered_domains_match_a_one_pass_substitution(tmp_path: Path, model_cache: Path) -> None:
    tpl = tmp_path / "domain.xml"
    tpl.write_text(TEMPLATE)
    cfg = load_config(write_config(tmp_path, model_cache, domain_template=str(tpl)))
    r = DomainRenderer(cfg, "ctl<&>'1")
    types = list(cfg.instance_types)
    cases = 0
    for n in range(12):   # parts kept from one call must not leak into the next
        t = types[n % len(types)]
        inst = Instance(id=f"i-{n:08x}", owner="1", reservation_id="r-1", image_id="ami-1", instance_type=t,
                        host="h", zone="z", state="pending", launch_time=0.0, uuid=f"u-{n}",
                        mac=None if n == 3 else f"52:54:00:00:00:{n:02x}", private_ip=None if n == 5 else f"10.0.0.{n}")
        image = f"/img/{n % 3}&'<x>.qcow2"
        kernel = Path(f"/k/{n % 2}<") if n % 4 else None
        initrd = Path("/i/rd") if n % 8 == 1 else None
        files = {"instance_dir": f"/inst/{inst.id}", "console_log": f"/inst/{inst.id}/console.log"}
        if n % 2:
            files["root_disk"] = f"/vol/{n}$name"
        disks = [(f"/vol/d{n}", "vdb")] if n % 3 else []
        nics = f"<interface>{n}$mac</interface>"
        got = r.render(inst, cfg.instance_types[t], image, files, kernel, initrd, disks, nics)
        assert got == _reference(r, inst, image, files, kernel, initrd, disks, nics)
        cases += 1
    assert cases == 12


async def test_a_template_naming_no_file_gets_prepares_values_without_it(tmp_path: Path) -> None:
    """InstanceFiles.plain (compute's way past prepare for a template naming no disk, drive or log
    file) answers what prepare does for it; for a template naming one, it leaves it to prepare."""
    from cloudctl.core.instance_files import InstanceFiles

    inst = Instance(id="i-0a1", owner="a", reservation_id="r-1", image_id="ami-1", instance_type="t",
                    host="h", zone="z", state="pending", launch_time=1.0)
    for base in (tmp_path / "instances", Path("relative/instances")):
        files = InstanceFiles(base, None)   # type: ignore[arg-type]   # (no file made: no storage)
        plain = "<domain><name>$name</name><dir>$instance_dir</dir></domain>"
        want = await files.prepare(inst, None, None, None, plain, [], hostname="h",   # type: ignore[arg-type]
                                   gateway=None, prefixlen=None)
        assert files.plain(inst.id, plain) == want == {
            "instance_dir": str(base / inst.id), "console_log": str(base / inst.id / "console.log")}
        assert files.plain(inst.id, plain + "<log>$console_log</log>") is None
