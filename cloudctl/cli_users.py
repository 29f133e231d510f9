"""`cloudctl user add-dn|remove-dn|list-dn|set`: users' certificate subjects and login flags (x509 login,
EC2-only), through the admin API. See docs/tls.md."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COMMANDS = ("add-dn", "remove-dn", "list-dn", "set")


def add_parsers(u: Any) -> None:
    """The subcommands, on `cloudctl user`'s subparsers."""
    for name, verb in (("add-dn", "give"), ("remove-dn", "take from")):
        p = u.add_parser(name, help=f"{verb} a user a certificate subject (DN) that logs in as them")
        p.add_argument("name")
        p.add_argument("dn", nargs="?", help="the DN: /C=../O=../CN=.. or CN=..,O=..,C=..")
        p.add_argument("--cert", type=Path, help="take the DN from this PEM certificate instead")
    p = u.add_parser("list-dn", help="a user's DNs and login flags")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p = u.add_parser("set", help="a user's login flags")
    p.add_argument("name")
    p.add_argument("--x509-only", dest="x509_only", action=argparse.BooleanOptionalAction, default=None,
                   help="a matching client certificate alone logs in (no EC2 signature)")
    p.add_argument("--ec2-only", dest="ec2_only", action=argparse.BooleanOptionalAction, default=None,
                   help="EC2 API only: no XML-RPC session (econe's public driver)")


def _dn_body(args: argparse.Namespace) -> dict[str, str]:
    if (args.dn is None) == (args.cert is None):
        raise SystemExit("cloudctl: give a DN or --cert FILE (one of them)")
    if args.cert is not None:
        try:
            return {"cert": args.cert.read_text()}
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"cloudctl: cannot read {args.cert}: {getattr(e, 'strerror', None) or e}") from None
    return {"dn": args.dn}


def _show(user: dict[str, Any]) -> str:
    flags = [f for f, on in (("x509-only", user["X509Only"]), ("ec2-only", user["Ec2Only"])) if on]
    lines = [f"user {user['UserName']}" + (f" ({', '.join(flags)})" if flags else "")]
    lines += [f"  {dn}" for dn in user["DNs"]] or ["  (no DN)"]
    return "\n".join(lines)


def run(client: Any, args: argparse.Namespace) -> None:
    path = f"/v0/users/{args.name}"
    if args.sub == "add-dn":
        print(_show(client.call("POST", path + "/dns", _dn_body(args))))
    elif args.sub == "remove-dn":
        print(_show(client.call("DELETE", path + "/dns", _dn_body(args))))
    elif args.sub == "list-dn":
        user = client.call("GET", path)
        print(json.dumps(user, indent=2) if args.json else _show(user))
    else:
        if args.x509_only is None and args.ec2_only is None:
            raise SystemExit("cloudctl: nothing to set (--x509-only/--no-x509-only, --ec2-only/--no-ec2-only)")
        print(_show(client.call("PATCH", path, {"x509_only": args.x509_only, "ec2_only": args.ec2_only})))
