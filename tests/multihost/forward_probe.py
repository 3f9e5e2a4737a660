"""Run inside a scratch "host" namespace: can two namespaced hosts talk while the host's FORWARD
policy is DROP (what a running dockerd sets)?

    nsenter --net=/run/netns/HOST python -m tests.multihost.forward_probe

Sets FORWARD to DROP and bridged traffic to pass iptables in the namespace it runs in (the
host's own firewall is untouched), then tries one TCP connection between two hosts wired the
old way (a bridge in the host namespace) and one between two hosts of `Network`. Prints
{"bridge_in_host": bool, "network": bool}: whether each connection got through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.multihost.netns import Network

PORT = 7000
SERVER = (f"import socket; s = socket.create_server(('0.0.0.0', {PORT})); s.settimeout(8); "
          "c, _ = s.accept(); c.sendall(b'ok'); c.close()")
CLIENT = (f"import socket, sys; c = socket.create_connection((sys.argv[1], {PORT}), timeout=3); "
          "sys.exit(0 if c.recv(2) == b'ok' else 1)")


def connects(server_ns: str, client_ns: str, address: str) -> bool:
    """One TCP connection from `client_ns` to `server_ns` at `address` (3 s, a few tries)."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3):  # the server may still be starting
            client = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c",
                                     CLIENT, address], capture_output=True, timeout=20)
            if client.returncode == 0:
                return True
        return False
    finally:
        server.kill()
        server.wait(10)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def bridge_in_host() -> bool:
    """Two hosts on a bridge in this (host) namespace: the layout a FORWARD DROP cuts."""
    tag = f"fp{os.getpid() % 100000}"
    names = [f"{tag}a", f"{tag}b"]
    try:
        ip("link", "add", f"{tag}br", "type", "bridge")
        ip("link", "set", f"{tag}br", "up")
        for i, ns in enumerate(names):
            ip("netns", "add", ns)
            ip("link", "add", f"{ns}v", "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", f"{ns}v", "master", f"{tag}br", "up")
            ip("-n", ns, "addr", "add", f"10.250.0.{i + 1}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        return connects(names[1], names[0], "10.250.0.2")
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{tag}br"], capture_output=True)


def network() -> bool:
    with Network(["x", "y"]) as net:
        return connects(net.ns["y"], net.ns["x"], net.address["y"])


def main() -> None:
    subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True, timeout=30)
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
    print(json.dumps({"bridge_in_host": bridge_in_host(), "network": network()}), flush=True)


if __name__ == "__main__":
    main()
