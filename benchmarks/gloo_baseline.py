"""Baseline: the shared workloads on stock CrypTen over torch.distributed (gloo).

Each party (and, for the TTP provider, CrypTen's trusted third party at rank
`world_size`) is a separate OS process started with the "spawn" method; they
meet at a file rendezvous in a fresh temporary directory. Every party times its
own runs and reports back over a multiprocessing queue.

    .venv/bin/python benchmarks/gloo_baseline.py [--epoch] [--repeats N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import statistics
import tempfile
import threading
import time
import traceback
from typing import Any

import torch

from parties.engine import load_crypten

try:  # imported as benchmarks.gloo_baseline
    from .workloads import EXPENSIVE, WORKLOADS
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from workloads import EXPENSIVE, WORKLOADS  # type: ignore[no-redef]

PROVIDERS = ("TTP", "TFP")
_GRACE_S = 5.0  # how long a finished party gets to exit before it is killed


def _exit_with_parent(parent_pid: int) -> None:
    """End this process if the parent dies (a SIGKILLed parent cannot clean up)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _party(
    rank: int,
    world_size: int,
    rendezvous: str,
    provider: str,
    workload_name: str,
    repeats: int,
    warmup: bool,
    queue: Any,
    parent_pid: int,
) -> None:
    """Child process body: one CrypTen party (rank < world_size) or the TTP server."""
    _exit_with_parent(parent_pid)
    try:
        torch.set_num_threads(1)
        os.environ.update({
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "RENDEZVOUS": rendezvous,
            "DISTRIBUTED_BACKEND": "gloo",
        })
        crypten = load_crypten()
        crypten.cfg.mpc.provider = provider
        crypten.cfg.communicator.verbose = True
        if rank == world_size:
            # Initializes itself and serves until party 0's uninit sends "terminate".
            crypten.mpc.provider.TTPServer()
            return
        crypten.init()
        comm = crypten.communicator.get()
        workload = WORKLOADS[workload_name]
        if warmup:
            workload(crypten)
        times: list[float] = []
        stats: dict[str, Any] = {}
        result: dict[str, Any] = {}
        for _ in range(repeats):
            comm.barrier()  # start together; before the reset so it is not counted
            crypten.reset_communication_stats()
            start = time.perf_counter()
            result = workload(crypten)
            times.append(time.perf_counter() - start)
            stats = comm.get_communication_stats()
        queue.put(("ok", rank, {
            "times": times,
            "rounds": stats["rounds"],
            "bytes": stats["bytes"],
            "result": result,
        }))
        crypten.uninit()
    except BaseException:
        queue.put(("error", rank, traceback.format_exc()))
        raise SystemExit(1) from None


def _collect(queue: Any, procs: list[Any], world_size: int, deadline: float) -> dict[int, dict]:
    """Wait for every party's report; raise on a party's error, a dead child or the deadline."""
    reports: dict[int, dict] = {}
    while len(reports) < world_size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"gloo baseline: only {sorted(reports)} of {world_size} reported")
        try:
            kind, rank, payload = queue.get(timeout=min(0.5, remaining))
        except queue_module.Empty:
            # procs[r] has rank r; a child gone before reporting (TTP: at all) has failed
            dead = [p for r, p in enumerate(procs) if p.exitcode is not None and r not in reports]
            if dead:
                try:  # its traceback may still be in the pipe
                    kind, rank, payload = queue.get(timeout=1.0)
                except queue_module.Empty:
                    names = ", ".join(f"{p.name} (exit {p.exitcode})" for p in dead)
                    raise RuntimeError(f"gloo baseline: {names} died") from None
            else:
                continue
        if kind == "error":
            raise RuntimeError(f"gloo baseline: rank {rank} failed:\n{payload}")
        reports[rank] = payload
    return reports


def _stop(procs: list[Any]) -> None:
    """Terminate, then kill, every child still alive; reap them all."""
    started = [p for p in procs if p.pid is not None]
    for p in started:
        if p.is_alive():
            p.terminate()
    for p in started:
        p.join(_GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()


def run_gloo(
    workload_name: str,
    provider: str,
    repeats: int,
    world_size: int = 3,
    timeout: float = 600,
    warmup: bool | None = None,
) -> dict[str, Any]:
    """Time `repeats` runs of a workload on stock CrypTen over gloo, one process per party.

    `provider` is "TTP" (an extra trusted-third-party process) or "TFP".
    `warmup` defaults to one untimed run unless the workload is in EXPENSIVE.
    Returns {"seconds": median over runs of the slowest party's time, "rounds"
    and "bytes": party 0's per run, "result": party 0's workload result,
    "party_seconds": each party's median}. All children are gone on return,
    including after an error or once `timeout` seconds have passed. Children
    are spawned, so a calling script needs the `if __name__ == "__main__":` guard.
    """
    if workload_name not in WORKLOADS:
        raise KeyError(f"unknown workload {workload_name!r}; choose from {sorted(WORKLOADS)}")
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if repeats < 1 or world_size < 2:
        raise ValueError("need repeats >= 1 and world_size >= 2")
    if warmup is None:
        warmup = workload_name not in EXPENSIVE

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    tmpdir = tempfile.mkdtemp(prefix="smpc-gloo-")
    rendezvous = f"file://{tmpdir}/rendezvous"
    n_procs = world_size + (provider == "TTP")
    procs = [
        ctx.Process(
            target=_party,
            args=(rank, world_size, rendezvous, provider, workload_name, repeats, warmup,
                  queue, os.getpid()),
            name="ttp" if rank == world_size else f"party-{rank}",
            daemon=True,
        )
        for rank in range(n_procs)
    ]
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.start()
        reports = _collect(queue, procs, world_size, deadline)
        for p in procs:
            p.join(max(0.0, min(_GRACE_S, deadline - time.monotonic())))
    finally:
        _stop(procs)
        queue.close()
        queue.cancel_join_thread()
        shutil.rmtree(tmpdir, ignore_errors=True)

    per_run_max = [max(reports[r]["times"][i] for r in range(world_size)) for i in range(repeats)]
    return {
        "seconds": statistics.median(per_run_max),
        "rounds": int(reports[0]["rounds"]),
        "bytes": int(reports[0]["bytes"]),
        "result": reports[0]["result"],
        "party_seconds": [statistics.median(reports[r]["times"]) for r in range(world_size)],
    }


def _format_result(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in result.items())


def main(argv: list[str] | None = None) -> None:
    """Run every workload with each provider and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch", action="store_true", help="include the logreg epoch row")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row")
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per row")
    args = parser.parse_args(argv)

    names = [n for n in WORKLOADS if args.epoch or n not in EXPENSIVE]
    width = max(len(n) for n in names)
    print(f"{'workload':<{width}}  provider  {'seconds':>8}  {'rounds':>7}  {'MB':>9}  result")
    for name in names:
        for provider in args.providers:
            row = run_gloo(name, provider, args.repeats, timeout=args.timeout)
            print(f"{name:<{width}}  {provider:<8}  {row['seconds']:8.3f}  {row['rounds']:7d}  "
                  f"{row['bytes'] / 1e6:9.2f}  {_format_result(row['result'])}", flush=True)


if __name__ == "__main__":
    main()
