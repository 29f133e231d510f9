"""Switches for the switch-family tests: fake-switches models on loopback (one of them, Arista's,
given the native-VLAN commands it lacks) and a tiny SSH server that misbehaves on purpose.

fake-switches 1.5's `arista_generic` model knows trunk ports and their allowed VLANs but not
`switchport trunk native vlan N` (it answers `% Incomplete command`), so an untagged network on
an Arista port cannot be shown against it unchanged. `ARISTA_NATIVE` is the same model run with
those two commands added, written as EOS documents them: `switchport trunk native vlan N`, `no
switchport trunk native vlan`, and the native VLAN in `show running-config interfaces`. The
stock model is still used for everything it can do (see the tests).
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from hil_lab import FakeSwitch
from support import wait_until

# Run as `python -c ARISTA_NATIVE --model arista_generic ...`: the arista model, plus native VLANs.
ARISTA_NATIVE = r'''
import sys
from fake_switches.arista.command_processor import config_interface as ci, enabled as en

P = ci.ConfigInterfaceCommandProcessor
_sw, _nosw, _show = P.do_switchport, P.do_no_switchport, en.EnabledCommandProcessor._show_run_interfaces

def do_switchport(self, *args):
    if len(args) == 4 and args[:3] == ("trunk", "native", "vlan") and args[3].isdigit():
        self.port.trunk_native_vlan = int(args[3])
        return None
    return _sw(self, *args)

def do_no_switchport(self, *args):
    if args[:3] == ("trunk", "native", "vlan"):
        self.port.trunk_native_vlan = None
        return None
    return _nosw(self, *args)

def show(self, ports):
    for port in ports:
        _show(self, [port])
        if getattr(port, "trunk_native_vlan", None):
            self.write_line("   switchport trunk native vlan {}".format(port.trunk_native_vlan))

P.do_switchport, P.do_no_switchport = do_switchport, do_no_switchport
en.EnabledCommandProcessor._show_run_interfaces = show
sys.argv[0] = "fake-switches"
from fake_switches.cmd.main import main
main()
'''


@dataclass
class AristaNativeSwitch(FakeSwitch):
    """fake-switches' arista model with EOS's native-VLAN commands added (see above)."""
    model: str = "arista_generic"

    def start(self) -> "AristaNativeSwitch":
        self.proc = subprocess.Popen([sys.executable, "-c", ARISTA_NATIVE, "--model", self.model,
                                      "--hostname", "swarist", "--username", "admin", "--password", self.password,
                                      "--listen-host", "127.0.0.1", "--listen-port", str(self.port)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        self._wait_up()
        return self

    def _wait_up(self) -> None:
        import socket

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake-switches exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False
        wait_until(up, 30, "fake-switches (arista, native VLANs)")


# -- a switch that does not answer as a switch should ------------------------------------------

BEHAVIOURS = ("mute", "chatty", "drop", "drop-on-command", "wrong-prompt")


@dataclass
class BadSwitch:
    """An SSH server on loopback (port 0) that lets anyone in and then misbehaves:

    - mute: a banner, then silence (never a prompt);
    - chatty: a line of noise every 50 ms, forever, never a prompt;
    - drop: closes the session as soon as it opens;
    - drop-on-command: a prompt, then closes the session on the first command;
    - wrong-prompt: answers every line with `garbage?` and a prompt no CLI uses (`$ `).
    """
    behaviour: str
    host_key: str = ""
    port: int = 0
    sessions: int = 0
    _server: Any = None
    _key: Any = field(default=None, repr=False)

    async def start(self) -> "BadSwitch":
        """Listen (again: a restart keeps the port and host key)."""
        assert self.behaviour in BEHAVIOURS, self.behaviour
        if self._key is None:
            self._key = asyncssh.generate_private_key("ssh-ed25519")
            self.host_key = " ".join(self._key.export_public_key().decode().split()[:2])
        self._server = await asyncssh.create_server(
            _Server, "127.0.0.1", self.port, server_host_keys=[self._key], process_factory=self._session,
            encoding="utf-8")
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"hostname": "127.0.0.1", "ssh_port": self.port, "username": "admin", "password": "pw",
                "host_key": self.host_key, **extra}

    async def _session(self, proc: asyncssh.SSHServerProcess[str]) -> None:
        self.sessions += 1
        b = self.behaviour
        try:
            if b == "drop":
                proc.exit(0)
                return
            if b == "mute":
                proc.stdout.write("Welcome to the switch\r\n")
                await proc.stdin.read()           # until the client gives up
            elif b == "chatty":
                while True:
                    proc.stdout.write("%%% noise noise noise\r\n")
                    await asyncio.sleep(0.05)
            elif b == "drop-on-command":
                proc.stdout.write("\r\nsw#")
                await proc.stdin.readline()
            elif b == "wrong-prompt":
                proc.stdout.write("$ ")
                while True:
                    line = await proc.stdin.readline()
                    if not line:
                        break
                    proc.stdout.write(f"{line.strip()}\r\ngarbage?\r\n$ ")
        except (asyncssh.Error, OSError):     # the client went away
            return
        proc.exit(0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return True

