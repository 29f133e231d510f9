"""A real switch for the bare-metal tests: Open vSwitch (userspace datapath) behind a real sshd
on loopback, and "nodes" that are network namespaces cabled to OVS ports by veth pairs.

Every name carries `hil<pid>` so parallel sessions never collide; everything started here is
stopped by its own PID, and every namespace and veth is deleted, also when a test fails.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import free_port, wait_until

TAG = f"hil{os.getpid()}"


def run(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=60)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.strip()}")
    return out


@dataclass
class Ovs:
    """ovsdb-server + ovs-vswitchd on a private run directory, with one netdev bridge."""
    suffix: str = "a"
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=TAG)))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{TAG}{self.suffix}"[:15]

    @property
    def db(self) -> str:
        return f"unix:{self.dir}/db.sock"

    @property
    def env(self) -> dict[str, str]:
        d = str(self.dir)
        return {**os.environ, "OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d}

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db={self.db}", "--timeout=10", *args, env=self.env).stdout

    def start(self) -> "Ovs":
        d = self.dir
        run("ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        log = open(d / "daemons.log", "ab")
        self.procs.append(subprocess.Popen(
            ["ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock", f"--pidfile={d}/ovsdb-server.pid",
             f"--log-file={d}/ovsdb-server.log", f"--unixctl={d}/ovsdb-server.ctl"],
            env=self.env, stdout=log, stderr=log))
        wait_until(lambda: (d / "db.sock").exists(), 20, "ovsdb-server")
        run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init", env=self.env)
        self.procs.append(subprocess.Popen(
            ["ovs-vswitchd", self.db, f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log",
             f"--unixctl={d}/ovs-vswitchd.ctl"], env=self.env, stdout=log, stderr=log))
        self.vsctl("add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev")
        return self

    def stop(self) -> None:
        if self.procs:
            # The netdev bridge's tap outlives ovs-vswitchd unless the bridge is deleted first.
            run("ovs-vsctl", f"--db={self.db}", "--timeout=10", "--if-exists", "del-br", self.bridge,
                env=self.env, check=False)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Sshd:
    """OpenSSH's sshd on 127.0.0.1:<free port> with its own host key and one authorized key."""
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=TAG + "ssh")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def host_key(self) -> str:
        """The pinned public host key, as `ssh-ed25519 AAAA...`."""
        return " ".join((self.dir / "host_key.pub").read_text().split()[:2])

    def start(self) -> "Sshd":
        d = self.dir
        if (d / "sshd_config").exists():     # resumed after `pause`
            return self._spawn()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key"))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key))
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nMaxSessions 50\nMaxStartups 100:30:200\nLogLevel VERBOSE\n")
        return self._spawn()

    def _spawn(self) -> "Sshd":
        d = self.dir
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")])

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False
        wait_until(up, 20, "sshd")
        return self

    def pause(self) -> None:
        """Stop listening: new sessions are refused; `start` resumes with the same keys. A session
        already open lives on in its own sshd process until its client goes away."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Nodes:
    """Namespaces `<TAG>n<i>` each with eth0 = 10.251.0.<i>/24, cabled to OVS port `<TAG>v<i>`."""
    ovs: Ovs
    made: list[int] = field(default_factory=list)

    @staticmethod
    def port(i: int) -> str:
        return f"h{os.getpid()}v{i}"[:15]

    @staticmethod
    def ns(i: int) -> str:
        return f"{TAG}n{i}"

    @staticmethod
    def ip(i: int) -> str:
        return f"10.251.0.{i}"

    def add(self, i: int) -> None:
        ns, port = self.ns(i), self.port(i)
        run("ip", "netns", "add", ns)
        self.made.append(i)
        run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "link", "set", port, "up")
        self.ovs.vsctl("add-port", self.ovs.bridge, port)

    def pings(self, a: int, b: int) -> bool:
        """Does node a reach node b? Stale neighbour entries are flushed first (a failed probe
        leaves FAILED entries that would hide a path that just opened)."""
        for i in (a, b):
            run("ip", "-n", self.ns(i), "neigh", "flush", "all", check=False)
        out = run("ip", "netns", "exec", self.ns(a), "ping", "-c", "2", "-i", "0.3", "-W", "1", self.ip(b),
                  check=False)
        return out.returncode == 0

    def wait_pings(self, a: int, b: int, timeout: float = 15) -> bool:
        """Does node a reach node b within `timeout`? For paths expected open: the userspace
        datapath can miss the first probes on a loaded machine (flows not yet installed)."""
        t0 = time.monotonic()
        while not self.pings(a, b):
            if time.monotonic() - t0 > timeout:
                return False
        return True

    def remove_all(self) -> None:
        for i in self.made:
            run("ip", "link", "del", self.port(i), check=False)
            run("ip", "netns", "del", self.ns(i), check=False)
        self.made.clear()


@dataclass
class FakeSwitch:
    """A `fake-switches` process (a third-party switch CLI simulator over SSH) on loopback."""
    model: str = "cisco_generic"
    port: int = field(default_factory=free_port)
    password: str = "fake-switch-pw"
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix=TAG + "fs", suffix=".log")[1]))

    @property
    def host_key(self) -> str:
        from fake_switches.transports.ssh_service import getRSAKeys
        return " ".join(getRSAKeys()[0].split()[:2])

    def start(self) -> "FakeSwitch":
        exe = Path(sys.executable).with_name("fake-switches")
        self.proc = subprocess.Popen([str(exe), "--model", self.model, "--hostname", "sw" + self.model[:5],
                                      "--username", "admin", "--password", self.password,
                                      "--listen-host", "127.0.0.1", "--listen-port", str(self.port)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake-switches exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False
        wait_until(up, 30, "fake-switches")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)
