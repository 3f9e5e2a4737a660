"""The namespace harness itself: its hosts keep talking where a host firewall drops forwarding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.multihost.netns import ROOT, Network, unavailable

_why = unavailable() or next((f"`{tool}` is not installed" for tool in ("iptables", "nsenter")
                              if shutil.which(tool) is None), None)
pytestmark = pytest.mark.skipif(_why is not None, reason=f"cannot test the harness: {_why}")


def test_bridge_lives_outside_the_root_namespace() -> None:
    with Network(["x", "y"]) as net:
        here = subprocess.run(["ip", "-o", "link", "show", "master", net.bridge],
                              capture_output=True, text=True, timeout=30)
        there = subprocess.run(["ip", "-n", net.switch, "-o", "link", "show", "master",
                                net.bridge], capture_output=True, text=True, timeout=30)
        assert net.veth["x"] not in here.stdout
        assert net.veth["x"] in there.stdout and net.veth["y"] in there.stdout


def test_hosts_talk_while_the_host_forward_policy_drops() -> None:
    """dockerd sets the FORWARD policy to DROP; played in a scratch host namespace, so the
    machine's own firewall is untouched. The old layout (bridge in the host namespace) must be
    cut there, or the check proves nothing."""
    host = f"smpchost{os.getpid()}"
    subprocess.run(["ip", "netns", "add", host], check=True, timeout=30)
    try:
        probe = subprocess.run(
            ["nsenter", f"--net=/run/netns/{host}", sys.executable, "-m",
             "tests.multihost.forward_probe"], capture_output=True, text=True, timeout=120,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        subprocess.run(["ip", "netns", "del", host], capture_output=True, timeout=30)
    assert probe.returncode == 0, probe.stderr[-2000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["bridge_in_host"] is False, "the premise: a DROP policy cuts a host bridge"
    assert seen["network"] is True
