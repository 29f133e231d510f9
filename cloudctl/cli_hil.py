"""`cloudctl project|node|bm-network|switch|operation|headnode`: the bare-metal calls, thin over the HIL API.

Bare-metal networks are `bm-network`: `cloudctl network` lists the instances' virtual networks."""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, Protocol

COMMANDS = ("project", "node", "bm-network", "switch", "operation", "headnode")


class Client(Protocol):
    def call(self, method: str, path: str, body: Any = None) -> Any: ...
    def stream_bytes(self, path: str) -> Iterator[bytes]: ...


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def add_parsers(sub: Any) -> None:
    pr = sub.add_parser("project", help="bare-metal projects").add_subparsers(dest="sub", required=True)
    pr.add_parser("create").add_argument("name")
    pr.add_parser("delete").add_argument("name")
    pr.add_parser("list")
    for verb in ("connect-node", "detach-node"):
        p = pr.add_parser(verb)
        p.add_argument("project")
        p.add_argument("node")

    no = sub.add_parser("node", help="bare-metal nodes").add_subparsers(dest="sub", required=True)
    reg = no.add_parser("register", help="a node, with its IPMI (OBM) address if it has one")
    reg.add_argument("name")
    reg.add_argument("--ipmi-host")
    reg.add_argument("--ipmi-port", type=int, default=623)
    reg.add_argument("--ipmi-user")
    reg.add_argument("--ipmi-password")
    reg.add_argument("--ipmi-cipher-suite", type=int, help="e.g. 3 or 17 (default: ipmitool's discovery)")
    no.add_parser("delete").add_argument("name")
    pw = no.add_parser("power", help="power control through the node's IPMI")
    pw.add_argument("action", choices=["on", "off", "cycle", "status"])
    pw.add_argument("name")
    no.add_parser("list").add_argument("which", nargs="?", choices=["all", "free"], default="all")
    con = no.add_parser("console", help="the node's captured serial console output")
    con.add_argument("name")
    con.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
    con.add_argument("--status", action="store_true", help="the capture's state instead of its output")
    no.add_parser("console-start", help="start capturing the serial console (IPMI SOL)").add_argument("name")
    no.add_parser("console-stop", help="stop capturing the serial console").add_argument("name")
    no.add_parser("show").add_argument("name")
    nic = no.add_parser("add-nic")
    nic.add_argument("node")
    nic.add_argument("nic")
    nic.add_argument("macaddr")
    for verb in ("connect-network", "detach-network"):
        p = no.add_parser(verb)
        p.add_argument("node")
        p.add_argument("nic")
        p.add_argument("network")
        if verb == "connect-network":
            p.add_argument("--channel", help="vlan/native (default) or vlan/<id> for tagged")
        p.add_argument("--no-wait", action="store_true", help="print the operation id and return")

    ne = sub.add_parser("bm-network", help="bare-metal networks (VLANs on the switches)")
    ne = ne.add_subparsers(dest="sub", required=True)
    nc = ne.add_parser("create")
    nc.add_argument("name")
    nc.add_argument("--owner", default="admin", help="a project, or admin")
    nc.add_argument("--access", action="append",
                    help="a project allowed to attach it (repeat); none given: the owner only, or public for admin")
    nc.add_argument("--net-id", default="", help="an external VLAN id (default: one from the pool)")
    ne.add_parser("list")
    ne.add_parser("show").add_argument("name")
    ne.add_parser("delete").add_argument("name")
    for verb in ("grant", "revoke"):
        p = ne.add_parser(verb)
        p.add_argument("network")
        p.add_argument("project")

    sw = sub.add_parser("switch", help="switches and their ports").add_subparsers(dest="sub", required=True)
    sr = sw.add_parser("register")
    sr.add_argument("name")
    sr.add_argument("--type", required=True)
    sr.add_argument("--hostname", required=True)
    sr.add_argument("--ssh-port", type=int, default=22)
    sr.add_argument("--username", required=True)
    sr.add_argument("--host-key", required=True, help="the switch's SSH host key, e.g. 'ssh-ed25519 AAAA...'")
    sr.add_argument("--client-key", help="private key file on the controller")
    sr.add_argument("--password")
    sr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a driver field, e.g. bridge=br0 or ovsdb=unix:/run/openvswitch/db.sock")
    sw.add_parser("list")
    sw.add_parser("show").add_argument("name")
    sw.add_parser("delete").add_argument("name")
    ap = sw.add_parser("add-port")
    ap.add_argument("switch")
    ap.add_argument("port")
    cn = sw.add_parser("connect-nic", help="record which NIC is cabled to a port")
    cn.add_argument("switch")
    cn.add_argument("port")
    cn.add_argument("node")
    cn.add_argument("nic")
    au = sw.add_parser("audit", help="read every port's VLANs back and compare with the records")
    au.add_argument("name", nargs="?")
    au.add_argument("--repair", action="store_true", help="set drifted ports back to the recorded VLANs")
    au.add_argument("--json", action="store_true")

    op = sub.add_parser("operation", help="switch operations").add_subparsers(dest="sub", required=True)
    op.add_parser("show").add_argument("id")

    hn = sub.add_parser("headnode", help="a project's VMs on its bare-metal networks").add_subparsers(
        dest="sub", required=True)
    hc = hn.add_parser("create")
    hc.add_argument("name")
    hc.add_argument("project")
    hc.add_argument("base_img", help="a public machine image, by id or name (see `headnode images`)")
    hc.add_argument("--instance-type")
    hc.add_argument("--user-data-file", help="a file given to the VM as its user data")
    for verb in ("delete", "show", "start", "stop"):
        hn.add_parser(verb).add_argument("name")
    hn.add_parser("list").add_argument("project")
    hn.add_parser("images")
    for verb in ("add-hnic", "delete-hnic"):
        p = hn.add_parser(verb)
        p.add_argument("name")
        p.add_argument("hnic")
    for verb in ("connect-network", "detach-network"):
        p = hn.add_parser(verb)
        p.add_argument("name")
        p.add_argument("hnic")
        p.add_argument("network")


def _value(text: str) -> Any:
    return int(text) if text.isdigit() else text


def _wait(client: Client, op_id: str) -> dict[str, Any]:
    while True:
        st: dict[str, Any] = client.call("GET", f"/hil/v0/operation/{op_id}")
        if st["status"] != "pending":
            return st
        time.sleep(0.2)


def _op_result(client: Client, op_id: str, wait: bool) -> None:
    if not wait:
        print(op_id)
        return
    st = _wait(client, op_id)
    if st["status"] != "done":
        raise SystemExit(f"cloudctl: operation {op_id} failed: {st['error']}")
    print(f"{op_id} done")


def run(client: Client, args: argparse.Namespace) -> None:
    c, s = args.cmd, args.sub
    out: Any = None
    if c == "project":
        if s in ("create", "delete"):
            client.call("PUT" if s == "create" else "DELETE", f"/hil/v0/project/{_q(args.name)}")
        elif s == "list":
            out = "\n".join(client.call("GET", "/hil/v0/projects"))
        else:
            client.call("POST", f"/hil/v0/project/{_q(args.project)}/{s.replace('-', '_')}", {"node": args.node})
    elif c == "node":
        if s == "register":
            obm = ({"type": "ipmi", "host": args.ipmi_host, "port": args.ipmi_port, "user": args.ipmi_user,
                    "password": args.ipmi_password} if args.ipmi_host else {})
            if obm and args.ipmi_cipher_suite is not None:
                obm["cipher_suite"] = args.ipmi_cipher_suite
            client.call("PUT", f"/hil/v0/node/{_q(args.name)}", {"obm": obm})
        elif s == "delete":
            client.call("DELETE", f"/hil/v0/node/{_q(args.name)}")
        elif s == "power" and args.action == "status":
            out = client.call("GET", f"/hil/v0/node/{_q(args.name)}/power_status")["power_status"]
        elif s == "power":
            client.call("POST", f"/hil/v0/node/{_q(args.name)}/power_{args.action}", {})
        elif s == "list":
            out = "\n".join(client.call("GET", f"/hil/v0/nodes/{args.which}"))
        elif s in ("console-start", "console-stop"):
            client.call("PUT" if s == "console-start" else "DELETE", f"/hil/v0/node/{_q(args.name)}/console")
        elif s == "console" and args.status:
            out = json.dumps(client.call("GET", f"/hil/v0/node/{_q(args.name)}/console_status"), indent=2)
        elif s == "console":
            path = f"/hil/v0/node/{_q(args.name)}/console"
            chunks = client.stream_bytes(path + "?follow=1") if args.follow else [client.call("GET", path)]
            try:
                for chunk in chunks:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
            except KeyboardInterrupt:
                pass
        elif s == "show":
            out = json.dumps(client.call("GET", f"/hil/v0/node/{_q(args.name)}"), indent=2)
        elif s == "add-nic":
            client.call("PUT", f"/hil/v0/node/{_q(args.node)}/nic/{_q(args.nic)}", {"macaddr": args.macaddr})
        else:
            body = {"network": args.network}
            if s == "connect-network" and args.channel:
                body["channel"] = args.channel
            res = client.call("POST", f"/hil/v0/node/{_q(args.node)}/nic/{_q(args.nic)}/{s.replace('-', '_')}", body)
            _op_result(client, res["status_id"], not args.no_wait)
    elif c == "bm-network":
        if s == "create":
            access = args.access if args.access is not None else ([] if args.owner == "admin" else [args.owner])
            client.call("PUT", f"/hil/v0/network/{_q(args.name)}",
                        {"owner": args.owner, "access": access, "net_id": args.net_id})
            vlan = client.call("GET", "/hil/v0/networks").get(args.name, {}).get("network_id", "?")
            out = f"{args.name}  vlan {vlan}"
        elif s == "list":
            nets = client.call("GET", "/hil/v0/networks")
            rows = [{"name": k, "vlan": v["network_id"],
                     "access": ",".join(v["projects"] or []) or "(public)"} for k, v in nets.items()]
            from .cli import _table
            out = _table(rows, ["name", "vlan", "access"])
        elif s == "show":
            out = json.dumps(client.call("GET", f"/hil/v0/network/{_q(args.name)}"), indent=2)
        elif s == "delete":
            client.call("DELETE", f"/hil/v0/network/{_q(args.name)}")
        else:
            client.call("PUT" if s == "grant" else "DELETE",
                        f"/hil/v0/network/{_q(args.network)}/access/{_q(args.project)}")
    elif c == "switch":
        if s == "register":
            body: dict[str, Any] = {"type": args.type, "hostname": args.hostname, "ssh_port": args.ssh_port,
                                    "username": args.username, "host_key": args.host_key}
            if args.client_key:
                body["client_key"] = args.client_key
            if args.password:
                body["password"] = args.password
            for kv in args.set:
                k, sep, v = kv.partition("=")
                if not sep:
                    raise SystemExit(f"cloudctl: --set {kv!r}: expected KEY=VALUE")
                body[k] = _value(v)
            client.call("PUT", f"/hil/v0/switch/{_q(args.name)}", body)
        elif s == "list":
            out = "\n".join(client.call("GET", "/hil/v0/switches"))
        elif s == "show":
            out = json.dumps(client.call("GET", f"/hil/v0/switch/{_q(args.name)}"), indent=2)
        elif s == "delete":
            client.call("DELETE", f"/hil/v0/switch/{_q(args.name)}")
        elif s == "add-port":
            client.call("PUT", f"/hil/v0/switch/{_q(args.switch)}/port/{_q(args.port)}")
        elif s == "connect-nic":
            client.call("POST", f"/hil/v0/switch/{_q(args.switch)}/port/{_q(args.port)}/connect_nic",
                        {"node": args.node, "nic": args.nic})
        else:
            path = f"/hil/v0/switch/{_q(args.name)}/audit" if args.name else "/hil/v0/switches/audit"
            rows = client.call("POST", path, {"repair": args.repair})
            if args.json:
                out = json.dumps(rows, indent=2)
            else:
                from .cli import _table
                out = _table(rows, ["switch", "port", "status", "expected", "actual"])
            if not args.repair and any(r["status"] not in ("ok", "pending") for r in rows):
                print(out)
                sys.exit(3)     # drift found: scripts can tell
    elif c == "operation":
        out = json.dumps(client.call("GET", f"/hil/v0/operation/{_q(args.id)}"), indent=2)
    elif c == "headnode":
        out = _headnode(client, args)
    if out is not None:
        print(out)


def _headnode(client: Client, args: argparse.Namespace) -> str | None:
    s = args.sub
    if s == "create":
        body: dict[str, Any] = {"project": args.project, "base_img": args.base_img}
        if args.instance_type:
            body["instance_type"] = args.instance_type
        if args.user_data_file:
            with open(args.user_data_file) as f:
                body["user_data"] = f.read()
        client.call("PUT", f"/hil/v0/headnode/{_q(args.name)}", body)
    elif s == "list":
        return "\n".join(client.call("GET", f"/hil/v0/project/{_q(args.project)}/headnodes"))
    elif s == "images":
        return "\n".join(client.call("GET", "/hil/v0/headnode_images/"))
    elif s == "show":
        return json.dumps(client.call("GET", f"/hil/v0/headnode/{_q(args.name)}"), indent=2)
    elif s == "delete":
        client.call("DELETE", f"/hil/v0/headnode/{_q(args.name)}")
    elif s in ("start", "stop"):
        client.call("POST", f"/hil/v0/headnode/{_q(args.name)}/{s}")
    elif s in ("add-hnic", "delete-hnic"):
        client.call("PUT" if s == "add-hnic" else "DELETE", f"/hil/v0/headnode/{_q(args.name)}/hnic/{_q(args.hnic)}")
    else:
        client.call("POST", f"/hil/v0/headnode/{_q(args.name)}/hnic/{_q(args.hnic)}/{s.replace('-', '_')}",
                    {"network": args.network})
    return None
