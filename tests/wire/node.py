"""One mesh node in its own process, following a small script (for tests that SIGSTOP or kill).

    python -m tests.wire.node '{"me": "a", "order": ["a", "b"], "script": [...], ...}'

It binds 127.0.0.1:0 and prints `PORT <n>`, reads the address book (one JSON
line) on stdin, connects and prints `UP`, then runs its script:

    ["send", peer]         send a small tensor to `peer`
    ["recv", peer]         wait for the next payload from `peer`
    ["sleep", seconds]
    ["mark", text]         print `MARK <text>`
    ["loop", n, [ops]]     repeat ops n times (n null: forever)

A PeerError is printed as `FAILED {"type", "peer", "what", "t"}` (t: wall-clock
time), then the node aborts (prints `ABORTED <t>`) and exits with code 3. A
script that ends closes the mesh and prints `DONE`. Other keys: `session`,
`options` (LinkOptions fields), `tls` (paths of ca, key, cert).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from parties.wire.transport import LinkOptions, Mesh, PeerError, TlsIdentity


def _say(*words: object) -> None:
    print(*words, flush=True)


def _run(mesh: Mesh, ops: list[Any]) -> None:
    for op in ops:
        kind = op[0]
        if kind == "send":
            mesh.send(op[1], torch.tensor([1]))
        elif kind == "recv":
            mesh.recv(op[1])
        elif kind == "sleep":
            time.sleep(op[1])
        elif kind == "mark":
            _say("MARK", op[1])
        elif kind == "loop":
            n = 0
            while op[1] is None or n < op[1]:
                _run(mesh, op[2])
                n += 1
        else:
            raise ValueError(f"unknown script step {op!r}")


def main(config: dict[str, Any]) -> int:
    tls = None
    if config.get("tls"):
        paths = config["tls"]
        tls = TlsIdentity(*(Path(paths[k]).read_bytes() for k in ("ca", "key", "cert")))
    me, order = config["me"], config["order"]
    mesh = Mesh(me, [n for n in order if n != me], order, config.get("session", "s"),
                LinkOptions(**config.get("options", {})), tls=tls)
    _say("PORT", mesh.bind("127.0.0.1:0"))
    mesh.connect(json.loads(sys.stdin.readline()))
    _say("UP")
    try:
        _run(mesh, config["script"])
    except PeerError as exc:
        _say("FAILED", json.dumps({"type": type(exc).__name__, "peer": exc.peer,
                                   "what": exc.what, "t": time.time()}))
        mesh.abort(str(exc))
        _say("ABORTED", time.time())
        return 3
    mesh.close()
    _say("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
