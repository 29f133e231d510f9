"""`cloudctl`: start the controller, or administer a running one through its admin API."""
from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import cli_hil, cli_users
from .config import Config, ConfigError, load_config


def _admin_tls(config: Config) -> ssl.SSLContext | None:
    """For an admin listener serving TLS: trust exactly its configured certificate (this CLI reads the
    same config on the same machine), whatever names it carries; the listener's own address is used."""
    tls = config.tls_of("admin")
    if tls is None:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    try:
        ctx.load_verify_locations(cafile=tls.cert)
    except (OSError, ssl.SSLError) as e:
        raise SystemExit(f"cloudctl: cannot read the admin listener's certificate {tls.cert}: {e}") from None
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN   # (the server certificate itself is the anchor)
    return ctx


class AdminClient:
    def __init__(self, config: Config) -> None:
        self.tls = _admin_tls(config)
        self.base = f"{'https' if self.tls else 'http'}://{config.admin.listen}:{config.admin.port}"
        token_file = config.state_dir / "admin.token"
        try:
            self.token = token_file.read_text().strip()
        except OSError:
            raise SystemExit(f"cloudctl: no admin token at {token_file}; is the controller started "
                             f"(cloudctl serve) with this config?") from None

    def call(self, method: str, path: str, body: Any = None, data: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        hdrs = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=3600, context=self.tls) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())
                msg = f"{err.get('error') or err.get('type')}: {err.get('message') or err.get('msg')}"
            except ValueError:
                msg = f"HTTP {e.code}"
            raise SystemExit(f"cloudctl: {msg}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"cloudctl: cannot reach the admin API at {self.base}: {e.reason}") from None
        return json.loads(raw) if ctype.startswith("application/json") else raw

    def stream_bytes(self, path: str) -> Iterator[bytes]:
        """The body as it arrives (until the server closes it)."""
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=None, context=self.tls) as resp:
                while chunk := resp.read1(65536):
                    yield chunk
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())
                msg = f"{err.get('type')}: {err.get('msg')}"
            except ValueError:
                msg = f"HTTP {e.code}"
            raise SystemExit(f"cloudctl: {msg}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"cloudctl: cannot reach the admin API at {self.base}: {e}") from None

    def stream(self, path: str) -> Any:
        """Lines of an NDJSON stream, parsed, as they arrive (until the server closes it)."""
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=None, context=self.tls) as resp:
                for line in resp:
                    if line.strip():
                        yield json.loads(line)
        except urllib.error.URLError as e:
            raise SystemExit(f"cloudctl: cannot reach the admin API at {self.base}: {e}") from None


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


class _Upload:
    """A file body that reports progress on stderr as urllib reads it."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")
        self.size = path.stat().st_size
        self.sent = 0
        self.tty = sys.stderr.isatty()

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(1 << 20 if n is None or n < 0 else n)
        self.sent += len(chunk)
        pct = 100 * self.sent // max(self.size, 1)
        if self.tty or not chunk:
            end = "\n" if not chunk else "\r"
            sys.stderr.write(f"uploading {self.sent / 2**20:.1f}/{self.size / 2**20:.1f} MiB ({pct}%){end}")
            sys.stderr.flush()
        return chunk


def _fetch(client: AdminClient, args: argparse.Namespace) -> None:
    """The controller downloads the URL; show its progress until the image is ready."""
    started = client.call("POST", "/v0/images/fetch", {
        "url": args.file, "name": args.name, "description": args.description, "sha256": args.sha256,
        "sha512": args.sha512, "type": args.type, "kernel": args.kernel, "ramdisk": args.ramdisk})
    tty = sys.stderr.isatty()
    while True:
        st = client.call("GET", f"/v0/images/{started['ImageId']}")
        total = st["Total"]
        pct = f" ({100 * st['Done'] // total}%)" if total else ""
        line = f"downloading {st['Done'] / 2**20:.1f}{f'/{total / 2**20:.1f}' if total else ''} MiB{pct}"
        if tty:
            sys.stderr.write("\r" + line)
        if st["State"] != "pending":
            sys.stderr.write(("\r" if tty else "") + line + "\n")
            break
        time.sleep(0.5)
    if st["State"] != "available":
        raise SystemExit(f"cloudctl: image {st['ImageId']} failed: {st['Error']}")
    print(f"{st['ImageId']}  {st['Name']}  {st['Size']} bytes  {st['Format']}  sha256 {st['Sha256']}")


def _config_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let `--config` follow any subcommand too (`cloudctl user create alice --config F`), as the
    start-up banner prints it: argparse only takes an option on the parser that declares it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                subparser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _config_anywhere(subparser)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's arguments. The parsers are dropped on return: `serve` never returns, and
    kept in its caller's frame they held ~0.5 MiB for the server's life."""
    p = argparse.ArgumentParser(prog="cloudctl", description="A private-cloud controller serving the EC2 API")
    p.add_argument("--config",
                   help="config file (default: $CLOUDCTL_CONFIG, else the source tree's config/cloudctl.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="start the controller")
    u = sub.add_parser("user", help="manage users").add_subparsers(dest="sub", required=True)
    uc = u.add_parser("create")
    uc.add_argument("name")
    uc.add_argument("--json", action="store_true")
    ul = u.add_parser("list")
    ul.add_argument("--json", action="store_true")
    u.add_parser("delete").add_argument("name")
    cli_users.add_parsers(u)
    im = sub.add_parser("image", help="manage images").add_subparsers(dest="sub", required=True)
    ii = im.add_parser("import")
    ii.add_argument("file")
    ii.add_argument("--name", required=True)
    ii.add_argument("--description", default="")
    ii.add_argument("--type", choices=["machine", "kernel", "ramdisk"], default="machine",
                    help="kernel/ramdisk images (aki-/ari-) boot machine images that have no boot loader")
    ii.add_argument("--kernel", help="the kernel image (aki-...) this machine image boots with")
    ii.add_argument("--ramdisk", help="the ramdisk image (ari-...) this machine image boots with")
    ii.add_argument("--sha256", help="expected digest (checked before the image is registered)")
    ii.add_argument("--sha512", help="expected digest (checked before the image is registered)")
    im.add_parser("list")
    cap = sub.add_parser("capacity", help="how many more instances of each type fit")
    cap.add_argument("--by-zone", action="store_true")
    cap.add_argument("--json", action="store_true")
    sub.add_parser("hosts", help="hypervisor hosts and their use (same as `host list`)")
    ho = sub.add_parser("host", help="hypervisor hosts: state, use, admin").add_subparsers(dest="sub", required=True)
    hl = ho.add_parser("list")
    hl.add_argument("--json", action="store_true")
    for verb in ("show", "disable", "enable", "offline"):
        ho.add_parser(verb).add_argument("name")
    ho.add_parser("fence", help="confirm a failed host is powered off (when it has no fence agent, or it "
                                "failed): its running instances with failure_policy restart boot on other "
                                "hosts").add_argument("name")
    sub.add_parser("console", help="an instance's console output").add_argument("instance_id")
    sub.add_parser("checkpoint", help="write a checkpoint now")
    nw = sub.add_parser("network", help="virtual networks").add_subparsers(dest="sub", required=True)
    nw.add_parser("list", help="networks with used/free leases").add_argument("--json", action="store_true")
    pl = nw.add_parser("plug", help="on a hypervisor host the controller does not reach (remote): make the "
                                    "Linux bridge guests of an Open vSwitch network or VLAN join (idempotent)")
    pl.add_argument("ovs_bridge")
    pl.add_argument("--vlan", type=int)
    pl.add_argument("--ovs-db", help="ovs-vsctl's --db (default: the system's OVS database)")
    ev = sub.add_parser("events", help="the event log: instance and host states, switch operations, ...")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--kind", help="only this kind (a prefix: instance, host, marketplace.list, ...)")
    ev.add_argument("--subject", help="only events about this instance, host, ...")
    ev.add_argument("--limit", type=int, default=100)
    ev.add_argument("--json", action="store_true")
    cli_hil.add_parsers(sub)
    _marketplace_parser(sub)
    ad = sub.add_parser("address", help="elastic IPs").add_subparsers(dest="sub", required=True)
    ad.add_parser("list", help="every elastic IP held, and where it points").add_argument("--json", action="store_true")
    _config_anywhere(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.cmd == "serve" and argv is None:   # (the process's own command line: what an exec repeats)
        from . import malloc
        malloc.exec_with_tunables()   # once, before the config is read: glibc reads its tunables at exec

    cfg_path = args.config
    try:
        config = load_config(cfg_path)
    except ConfigError as e:
        raise SystemExit(f"cloudctl: {e}") from None

    if args.cmd == "serve":
        from . import deferred_client
        from .trust_anchors import from_directory
        with from_directory():   # aiohttp's client context, built at its import, reads no CA bundle
            deferred_client.defer()   # (its sessions at their first use; the connector here)
            from .server import StartError, serve
        if cfg_path:
            os.environ["CLOUDCTL_CONFIG_ARG"] = f" --config {cfg_path}"
        from .api.ec2.model import ModelError
        from .core.secrets import SecretsError
        try:
            serve(config)
        except (SecretsError, ModelError, StartError) as e:
            raise SystemExit(f"cloudctl: {e}") from None
        return
    if args.cmd == "network" and args.sub == "plug":   # local: no controller involved
        from .drivers.hypervisor.ovs_plug import HybridPlug, PlugError
        plug = HybridPlug.of(args.ovs_bridge, args.vlan, args.ovs_db)
        try:
            plug.ensure()
        except PlugError as e:
            raise SystemExit(f"cloudctl: {e}") from None
        print(f"{plug.bridge}: Linux bridge for guests; uplink {plug.veth} <-> OVS port {plug.ovs_port} on "
              f"{plug.ovs_bridge}" + (f" (VLAN {plug.vlan})" if plug.vlan is not None else ""))
        return
    client = AdminClient(config)
    if args.cmd in cli_hil.COMMANDS:
        cli_hil.run(client, args)
    elif args.cmd == "user" and args.sub in cli_users.COMMANDS:
        cli_users.run(client, args)
    elif args.cmd == "user":
        if args.sub == "create":
            user = client.call("POST", "/v0/users", {"name": args.name})
            if args.json:
                print(json.dumps({"AccessKeyId": user["AccessKeyId"], "SecretAccessKey": user["SecretAccessKey"]}))
            else:
                print(f"user {user['UserName']} (account {user['AccountId']})\n"
                      f"AccessKeyId     {user['AccessKeyId']}\nSecretAccessKey {user['SecretAccessKey']}\n"
                      f"The secret is shown only now.")
        elif args.sub == "list":
            users = client.call("GET", "/v0/users")
            print(json.dumps(users, indent=2) if args.json else
                  _table(users, ["UserName", "AccessKeyId", "AccountId"]))
        else:
            client.call("DELETE", f"/v0/users/{args.name}")
            print(f"deleted user {args.name}")
    elif args.cmd == "image":
        if args.sub == "import" and args.file.startswith(("http://", "https://")):
            _fetch(client, args)
        elif args.sub == "import":
            path = Path(args.file)
            if not path.is_file():
                raise SystemExit(f"cloudctl: no such file {path}")
            from urllib.parse import urlencode
            q = urlencode({"name": args.name, "description": args.description, "type": args.type,
                           "kernel": args.kernel or "", "ramdisk": args.ramdisk or ""})
            body = _Upload(path)
            res = client.call("PUT", f"/v0/images?{q}", data=body,
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(len(body))})
            print(f"{res['ImageId']}  {res['Name']}  {res['Size']} bytes  {res['Format']}  sha256 {res['Sha256']}")
        else:
            print(_table(client.call("GET", "/v0/images"), ["ImageId", "Name", "Owner", "Size", "Format", "Public"]))
    elif args.cmd == "capacity":
        rows = client.call("GET", "/v0/capacity" + ("?by_zone=1" if args.by_zone else ""))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                r["free/total"] = f"{r['available']}/{r['total']}"
                r["used%"] = r["used_percent"]
            cols = ["instance_type"] + (["zone"] if args.by_zone else []) + ["free/total", "used%"]
            print(_table(rows, cols))
    elif args.cmd == "hosts" or (args.cmd == "host" and args.sub == "list"):
        rows = client.call("GET", "/v0/hosts")
        if getattr(args, "json", False):
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                r["vcpus used/total"] = f"{r['used_vcpus']}/{r['vcpus']}"
                r["memory MiB used/total"] = f"{r['used_memory_mib']}/{r['memory_mib']}"
                r["last seen"] = _ago(r["last_seen"])
            print(_table(rows, ["name", "zone", "state", "instances", "vcpus used/total", "memory MiB used/total",
                                "last seen"]))
    elif args.cmd == "host" and args.sub == "fence":
        res = client.call("POST", f"/v0/hosts/{args.name}/fence")
        print(f"{args.name} fenced; restarted elsewhere: {', '.join(res['restarted']) or 'none'}")
    elif args.cmd == "host":
        path = f"/v0/hosts/{args.name}" + ("" if args.sub == "show" else f"/{args.sub}")
        row = client.call("GET" if args.sub == "show" else "POST", path)
        for k, v in row.items():
            if k in ("last_seen", "since", "fenced_at"):
                text = _ago(v)
            elif k == "fence_next_attempt":
                text = f"in {max(0.0, v - time.time()):.0f}s" if v else "-"
            elif isinstance(v, (dict, list)):
                text = json.dumps(v)
            else:
                text = "-" if v in (None, "") else str(v)
            print(f"{k:<16} {text}")
    elif args.cmd == "console":
        sys.stdout.buffer.write(client.call("GET", f"/v0/console/{args.instance_id}"))
    elif args.cmd == "checkpoint":
        print(client.call("POST", "/v0/checkpoint"))
    elif args.cmd == "events":
        _events(client, args)
    elif args.cmd == "network":
        rows = client.call("GET", "/v0/networks")
        print(json.dumps(rows, indent=2) if args.json else
              _table(rows, ["name", "subnet_id", "zone", "cidr", "bridge", "used", "free"]))
    elif args.cmd == "marketplace":
        _marketplace(client, args)
    elif args.cmd == "address":
        res = client.call("GET", "/v0/addresses")
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"{res['held']} of {res['pool_size']} pool addresses held")
            if res["addresses"]:
                print(_table(res["addresses"], ["PublicIp", "AllocationId", "UserName", "InstanceId", "PrivateIp"]))


def _marketplace_parser(sub: Any) -> None:
    mp = sub.add_parser("marketplace", help="publish and subscribe to signed image lists").add_subparsers(
        dest="sub", required=True)
    pub = mp.add_parser("publish", help="add images to this cloud's signed list (none: re-sign)")
    pub.add_argument("images", nargs="*", metavar="IMAGE")
    mp.add_parser("show", help="the published list").add_argument("--json", action="store_true")
    dep = mp.add_parser("deprecate", help="publish a new version without IMAGE")
    dep.add_argument("image", metavar="IMAGE")
    dep.add_argument("--reason", required=True)
    s = mp.add_parser("subscribe", help="follow a remote signed image list")
    s.add_argument("url")
    s.add_argument("--identifier", required=True, help="the list's dc:identifier")
    s.add_argument("--endorser", nargs=2, action="append", required=True, metavar=("SUBJECT_DN", "ISSUER_DN"),
                   help="an allowed signer (repeatable); the slash or RFC 4514 form")
    s.add_argument("--trust", required=True, help="CA certificates (and CRLs): a PEM file or a directory")
    s.add_argument("--policy", choices=["accept", "hold"], default="accept",
                   help="new images download at once, or wait for `approve`")
    s.add_argument("--interval", type=float, default=3600, help="poll interval in seconds")
    mp.add_parser("list", help="subscriptions").add_argument("--json", action="store_true")
    mp.add_parser("remove", help="unsubscribe; its images expire").add_argument("subscription")
    mp.add_parser("poll", help="poll a subscription now").add_argument("subscription")
    e = mp.add_parser("endorsers", help="replace a subscription's allowed endorsers")
    e.add_argument("subscription")
    e.add_argument("--endorser", nargs=2, action="append", default=[], metavar=("SUBJECT_DN", "ISSUER_DN"))
    mp.add_parser("approve", help="download a held image").add_argument("image", metavar="IMAGE")
    mp.add_parser("status", help="subscribed images and download progress").add_argument("--json", action="store_true")


def _marketplace(client: AdminClient, args: argparse.Namespace) -> None:
    if args.sub in ("publish", "deprecate", "show"):
        if args.sub == "publish":
            res = client.call("POST", "/v0/marketplace/publish", {"images": args.images})
        elif args.sub == "deprecate":
            res = client.call("POST", "/v0/marketplace/deprecate", {"image": args.image, "reason": args.reason})
        else:
            res = client.call("GET", "/v0/marketplace/published")
        if getattr(args, "json", False):
            print(json.dumps(res, indent=2))
            return
        print(f"list {res['ListId']}  version {res['Version']}  expires {res.get('Expires')}\n  {res['Url']}")
        for im in res["Images"]:
            print(f"  {im['ImageId']}  {im['Identifier']}  sha512 {im['Sha512'][:16]}...")
        for im in res.get("Deprecated", []):
            print(f"  {im['ImageId']}  deprecated: {im['Reason']}")
    elif args.sub == "subscribe":
        res = client.call("POST", "/v0/marketplace/subscriptions", {
            "url": args.url, "identifier": args.identifier, "endorsers": args.endorser, "trust": args.trust,
            "policy": args.policy, "interval_s": args.interval})
        print(f"{res['Id']}  {res['Url']}")
    elif args.sub == "list":
        rows = client.call("GET", "/v0/marketplace/subscriptions")
        print(json.dumps(rows, indent=2) if args.json else
              _table(rows, ["Id", "Identifier", "Version", "Expires", "Policy", "LastResult", "Url"]))
    elif args.sub == "remove":
        client.call("DELETE", f"/v0/marketplace/subscriptions/{args.subscription}")
        print(f"removed {args.subscription}")
    elif args.sub == "poll":
        res = client.call("POST", f"/v0/marketplace/subscriptions/{args.subscription}/poll")
        print(f"{'accepted' if res['accepted'] else 'refused'} [{res['code']}] {res['message']}")
        for d in res.get("dropped", []):   # entries of an accepted list left out, each with its reason
            print(f"dropped [image-fields] {d}")
        if not res["accepted"]:
            raise SystemExit(1)
    elif args.sub == "endorsers":
        res = client.call("PUT", f"/v0/marketplace/subscriptions/{args.subscription}/endorsers",
                          {"endorsers": args.endorser})
        print(json.dumps(res["Endorsers"]))
    elif args.sub == "approve":
        res = client.call("POST", f"/v0/marketplace/images/{args.image}/approve")
        print(f"{res['ImageId']}  {res['State']}")
    else:
        rows = client.call("GET", "/v0/marketplace/status")
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        for r in rows:
            r["Progress"] = f"{r['Done'] * 100 // max(r['Total'], 1)}% of {r['Total']}"
        print(_table(rows, ["ImageId", "Title", "State", "Progress", "ListVersion", "Reason"]))


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    return f"{time.strftime('%H:%M:%S', time.gmtime(t))} ({max(0.0, time.time() - t):.0f}s ago)"


def _events(client: AdminClient, args: argparse.Namespace) -> None:
    from urllib.parse import urlencode
    q = urlencode({k: v for k, v in (("kind", args.kind), ("subject", args.subject),
                                     ("limit", str(args.limit)), ("follow", "1" if args.follow else ""))
                   if v})
    rows = client.stream(f"/v0/events?{q}") if args.follow else client.call("GET", f"/v0/events?{q}")
    try:
        for e in rows:
            if args.json:
                print(json.dumps(e), flush=True)
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["time"]))
                code = f" [{e['code']}]" if e.get("code") else ""
                print(f"{stamp}  {e['kind']:<16} {e['subject']:<22} {e['message']}{code}", flush=True)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
