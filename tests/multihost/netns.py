"""Multi-host runs on one machine: one Linux network namespace per node, on a bridge.

    with Network(["dealer", "hospital-a", ...], ports={"dealer": 7100, ...}) as net:
        proc = net.start("hospital-a", ["smpc", "party", ...])   # runs inside its namespace
        net.set_link("hospital-a", up=False)                     # unplug its cable

Each node gets its own namespace (its own loopback, routes and ports), one end
of a veth pair (the other end sits on the bridge) and an address in a private
10.x.y.0/24 network. The bridge lives in a namespace of its own (the switch),
joined to the root namespace by one more veth pair (the uplink, which carries
the root namespace's address .254 and the relays'): traffic between nodes is
bridged inside the switch, where no firewall rule applies, so a host whose
FORWARD policy is DROP (what a running dockerd sets) does not cut it. Names
resolve through a per-namespace hosts file (`ip netns exec` mounts
/etc/netns/<ns>/hosts over /etc/hosts), so consortium files name hosts exactly
as in docker/ (`hospital-a:7101`).

With `delay` set (or `relay=True`), every connection between nodes goes through a relay in the
root namespace that holds each direction back by `delay` seconds (round trip
2 x delay): `tc netem` is missing from this kernel (no sch_netem module).

`ComposeNodes` reads docker/compose.yaml and turns each service into the
command the container runs, with the container's mount points mapped onto
folders of a scratch directory: the namespaces play the containers.

Needs root and iproute2; `unavailable()` says why not.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.wire.relay import Relay

ROOT = Path(__file__).resolve().parents[2]
_count = itertools.count()


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"smpcprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Network:
    """Namespaces for `nodes` on one bridge (in a switch namespace of its own); processes
    started in them are killed on exit."""

    def __init__(self, nodes: list[str], ports: dict[str, int] | None = None,
                 delay: float = 0.0, relay: bool | None = None) -> None:
        n = next(_count)
        self.tag = f"{os.getpid() % 10000}{n}"
        net = (os.getpid() * 7 + n) % 60000
        self.prefix = f"10.{100 + net // 250 % 150}.{net % 250}"
        self.nodes = list(nodes)
        self.ports = ports or {}
        self.delay = delay
        self.relayed = bool(delay) if relay is None else relay  # relay: even with no delay
        self.switch = f"smpc{self.tag}-sw"  # the namespace that holds the bridge
        self.bridge = "br0"  # in self.switch
        self.uplink = f"smpu{self.tag}"  # root namespace's end of the link to the bridge
        self.ns = {node: f"smpc{self.tag}-{i}" for i, node in enumerate(nodes)}
        self.veth = {node: f"smpv{self.tag}x{i}" for i, node in enumerate(nodes)}
        self.address = {node: f"{self.prefix}.{i + 1}" for i, node in enumerate(nodes)}
        self.relay_address = {node: f"{self.prefix}.{i + 101}" for i, node in enumerate(nodes)}
        self.procs: list[subprocess.Popen[str]] = []
        self.relays: list[Relay] = []

    def __enter__(self) -> Network:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        sw = self.switch
        _ip("netns", "add", sw)
        _ip("link", "add", self.bridge, "type", "bridge", ns=sw)
        _ip("link", "set", self.bridge, "up", ns=sw)
        _ip("link", "add", self.uplink, "type", "veth", "peer", "name", "up0", "netns", sw)
        _ip("link", "set", "up0", "master", self.bridge, "up", ns=sw)
        _ip("addr", "add", f"{self.prefix}.254/24", "dev", self.uplink)
        _ip("link", "set", self.uplink, "up")
        for node in self.nodes:
            ns, veth = self.ns[node], self.veth[node]
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=sw)
            _ip("link", "set", veth, "master", self.bridge, "up", ns=sw)
            _ip("addr", "add", f"{self.address[node]}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
            hosts = Path("/etc/netns") / ns
            hosts.mkdir(parents=True, exist_ok=True)
            lines = ["127.0.0.1 localhost"]
            for other in self.nodes:
                via = self.address[other] if other == node or not self.relayed else \
                    self.relay_address[other]
                lines.append(f"{via} {other}")
            (hosts / "hosts").write_text("\n".join(lines) + "\n")
        if self.relayed:
            for node in self.nodes:
                _ip("addr", "add", f"{self.relay_address[node]}/24", "dev", self.uplink)
                relay = Relay((self.address[node], self.ports[node]), self.delay,
                              listen=(self.relay_address[node], self.ports[node]))
                relay.start()
                self.relays.append(relay)

    def start(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start `argv` inside `node`'s namespace (stdout and stderr merged, text)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               **kwargs.pop("env", {})}
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[node], *argv], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=kwargs.pop("cwd", ROOT), **kwargs)
        self.procs.append(proc)
        return proc

    def set_link(self, node: str, up: bool) -> None:
        """Plug or unplug `node`'s cable (the bridge side of its veth pair)."""
        _ip("link", "set", self.veth[node], "up" if up else "down", ns=self.switch)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for relay in self.relays:
            relay.stop()
        for node in self.nodes:
            ns = self.ns[node]
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)  # bridge, veths
        subprocess.run(["ip", "link", "del", self.uplink], capture_output=True)


class Output:
    """Collects a process's output lines in a thread; wait for a line that matches."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.times: list[float] = []  # time.monotonic() when each line arrived
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new:
                self.times.append(time.monotonic())
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> bool:
        """True once a line matches `pattern` (regex); False at timeout or when the output ends."""
        end = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._new:
            while True:
                if any(rx.search(ln) for ln in self.lines):
                    return True
                left = end - time.monotonic()
                if left <= 0 or (not self._thread.is_alive() and self.proc.poll() is not None):
                    return False
                self._new.wait(min(left, 0.5))

    def finish(self, timeout: float) -> int | None:
        """Wait for the process (bounded); return its exit code, None if still running."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._thread.join(5)
        return rc

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class ComposeNodes:
    """docker/compose.yaml's services as host commands, container mounts mapped into `scratch`."""

    def __init__(self, scratch: Path, compose: Path = ROOT / "docker" / "compose.yaml",
                 edits: dict[str, str] | None = None) -> None:
        self.compose_path = compose
        self.edits = edits or {}  # text replacements in the consortium file (same for all)
        self.spec = yaml.safe_load(compose.read_text())
        self.services: dict[str, Any] = self.spec["services"]
        self.scratch = scratch
        self.docker = compose.parent
        self._mounts: dict[str, dict[str, Path]] = {}

    def mounts(self, service: str) -> dict[str, Path]:
        """Container path -> host folder or file, for every volume of `service`."""
        if service not in self._mounts:
            self._mounts[service] = self._map_volumes(service)
        return self._mounts[service]

    def _map_volumes(self, service: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for vol in self.services[service].get("volumes", []):
            if isinstance(vol, str):  # short syntax: name:/target
                name, _, target = vol.partition(":")
                vol = {"type": "volume", "source": name, "target": target}
            if vol["type"] == "bind":
                out[vol["target"]] = (self.docker / vol["source"]).resolve()
            else:
                out[vol["target"]] = self.scratch / "volumes" / vol["source"]
        for path in out.values():
            if path.suffix == "":
                path.mkdir(parents=True, exist_ok=True)
        # mounts inside a folder that is no mount itself (the certs service's /certs/<node>):
        # that folder becomes a scratch folder whose entries link to the mounts
        mounted = [Path(t) for t in out]
        for target, path in list(out.items()):
            parent = Path(target).parent
            if parent == Path("/") or any(parent == m or m in parent.parents for m in mounted):
                continue
            folder = self.scratch / "nodes" / service / "fs" / parent.relative_to("/")
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / Path(target).name
            if not link.is_symlink():
                link.symlink_to(path, target_is_directory=True)
            out[str(parent)] = folder
        # the image's copy of docker/, with every container path rewritten to a host path
        app = self.scratch / "nodes" / service / "app-docker"
        out["/app/docker"] = app
        self._translate_tree(app, out)
        return out

    def _translate_tree(self, app: Path, mounts: dict[str, Path]) -> None:
        (app / "policies").mkdir(parents=True, exist_ok=True)
        for src in [self.docker / "consortium.toml", *(self.docker / "policies").glob("*.toml")]:
            dst = app / src.relative_to(self.docker)
            text = src.read_text()
            for old, new in self.edits.items() if src.name == "consortium.toml" else ():
                if old not in text:
                    raise ValueError(f"{src}: no {old!r} to replace")
                text = text.replace(old, new)
            for target in sorted(mounts, key=len, reverse=True):
                text = re.sub(rf'"{re.escape(target)}(/[^"]*)?"',
                              lambda m, t=target: f'"{mounts[t]}{m.group(1) or ""}"', text)
            dst.write_text(text)

    def command(self, service: str, extra: list[str] | None = None) -> list[str]:
        """The service's command with host paths, run by `smpc` (the image's entrypoint; the
        certs service's docker/certs.sh runs `smpc` too, then only sets owners)."""
        mounts = self.mounts(service)
        args = []
        for arg in self.services[service]["command"]:
            for target in sorted(mounts, key=len, reverse=True):
                if arg == target or arg.startswith(target + "/"):
                    arg = str(mounts[target]) + arg[len(target):]
                    break
            args.append(arg)
        return [sys.executable, "-m", "parties.cli", *args, *(extra or [])]

    def volume(self, name: str) -> Path:
        return self.scratch / "volumes" / name


class ComposeRun:
    """docker/compose.yaml's nodes started in one namespace each (certs made first)."""

    def __init__(self, scratch: Path, net: Network, edits: dict[str, str] | None = None) -> None:
        self.nodes = ComposeNodes(scratch, edits=edits)
        self.net = net
        self.names = [n for n in self.nodes.services if n != "certs"]
        self.out: dict[str, Output] = {}
        subprocess.run(self.nodes.command("certs"), check=True, capture_output=True, timeout=60)

    def start(self, extra: list[str] | None = None, resume: bool = False) -> None:
        """Every node; with `resume`, the parties continue from their checkpoints."""
        def flags(node: str) -> list[str]:
            return [*(extra or []), *(["--resume"] if resume and node != "dealer" else [])]

        self.out = {n: Output(self.net.start(n, self.nodes.command(n, flags(n))))
                    for n in self.names}

    def finish(self, timeout: float) -> dict[str, int | None]:
        """Wait (bounded) for every node; exit codes, None for any still running."""
        end = time.monotonic() + timeout
        return {n: o.finish(max(0.0, end - time.monotonic())) for n, o in self.out.items()}

    def result(self, party: str) -> dict[str, Any]:
        return json.loads((self.nodes.volume(f"results-{party}") / "result.json").read_text())

    def metrics(self, party: str) -> dict[str, Any]:
        return self.result(party)["revealed"]["metrics"]

    def wait_for_epoch(self, party: str, epoch: int, timeout: float = 240) -> None:
        if not self.out[party].wait_for(rf"epoch: epoch={epoch} ", timeout):
            raise AssertionError(f"{party} did not reach epoch {epoch}:\n"
                                 f"{self.out[party].text[-800:]}")

    def epoch_times(self, party: str) -> list[float]:
        """When `party` reported each epoch (time.monotonic())."""
        out = self.out[party]
        return [t for t, ln in zip(out.times, out.lines, strict=True)
                if ln.startswith("epoch: epoch=")]
