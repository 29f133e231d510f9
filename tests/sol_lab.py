"""A real BMC with serial-over-LAN for the console tests: OpenIPMI's `ipmi_sim` (Debian package
`openipmi`), an IPMI LAN simulator whose SOL is wired to a node's serial line over TCP.

virtualbmc cannot serve here: its pyghmi BMC answers "Activate Payload" with completion code 0x81
unless a console handler is plugged in, and virtualbmc plugs none. ipmi_sim's `sol "tcp:HOST:PORT"`
connects to the serial side as a TCP client (and keeps reconnecting), which is what a qemu
`<serial type='tcp'>` in bind mode offers, or here a `SerialLine` the test writes to as the node.
Everything runs on loopback and is stopped by its own PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import support
from hil_lab import free_port

USER, PASSWORD = "admin", "bmc-pw"
AVAILABLE = shutil.which("ipmi_sim") is not None and shutil.which("ipmitool") is not None

# One management controller at the usual BMC address (device id 0, IPMI 2.0, no SDRs).
EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


class SerialLine:
    """The node's side of its serial port: a TCP listener the BMC connects to. `write` is the node
    printing; `received` is what the BMC sent the node (keystrokes)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conn: socket.socket | None = None
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self.conn is not None:
                    self.conn.close()
                self.conn, self.connections = c, self.connections + 1
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    def _drain(self, c: socket.socket) -> None:
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass

    def wait_connected(self, after: int = 0, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while self.connections <= after:
            if time.time() > deadline:
                raise RuntimeError("the BMC did not connect to the node's serial line")
            time.sleep(0.05)

    def write(self, text: str) -> None:
        with self._lock:
            assert self.conn is not None, "the BMC is not connected"
            try:
                self.conn.sendall(text.encode())
            except OSError:
                pass                       # the BMC went away; it reconnects

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            if self.conn is not None:
                self.conn.close()


class IpmiSim:
    """ipmi_sim on a private directory and a free UDP port, SOL wired to tcp:127.0.0.1:<serial_port>."""

    def __init__(self, serial_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"sol{os.getpid()}"))
        self.port = free_port()
        (self.dir / "state").mkdir()
        (self.dir / "cmd.emu").write_text(EMU)
        (self.dir / "lan.conf").write_text(f"""name "sol{os.getpid()}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {self.port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  sol "tcp:127.0.0.1:{serial_port}" 115200
  user 2 true "{USER}" "{PASSWORD}" admin 10 none md2 md5 straight
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "IpmiSim":
        self.proc = subprocess.Popen(["ipmi_sim", "-n", "-c", str(self.dir / "lan.conf"), "-f",
                                      str(self.dir / "cmd.emu"), "-s", str(self.dir / "state")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while self.ipmitool("chassis", "power", "status").returncode != 0:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("ipmi_sim did not answer")
            time.sleep(0.1)
        return self

    def crash(self) -> None:
        """SIGKILL, as a BMC losing power: the sessions it had are gone without a word."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)

    def argv(self, *args: str) -> list[str]:
        return ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port), "-U", USER, "-E",
                *args]

    def ipmitool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=60,
                              env={**os.environ, "IPMI_PASSWORD": PASSWORD})

    def sol_active(self) -> bool:
        out = self.ipmitool("raw", "0x06", "0x4a", "0x01")
        assert out.returncode == 0, out.stderr
        return bool(int(out.stdout.split()[1], 16) & 1)

    def obm(self) -> dict[str, object]:
        return {"type": "ipmi", "host": "127.0.0.1", "port": self.port, "user": USER, "password": PASSWORD,
                "cipher_suite": 3}


def wait_until(check: "callable[[], bool]", what: str, timeout: float = 60) -> None:  # type: ignore[valid-type]
    """support.wait_until with the lab's argument order and its longer default (BMCs are slow)."""
    support.wait_until(check, timeout, what, interval=0.1)
