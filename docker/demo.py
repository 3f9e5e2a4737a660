"""`make docker-demo`: the Docker demo from engine to results, then torn down.

    python docker/demo.py [--timeout SECONDS] [--keep] [-f EXTRA.yaml ...] [--project NAME]
                          [--results FOLDER]

1. finds Docker and Compose (v2 `docker compose`, or 1.29 `docker-compose`); starts the engine
   when it is installed but not running (root, no service manager) or says how to;
2. builds the image (on a machine without an image registry, the base image comes from Debian
   packages first: docker/build-local-base.sh);
3. runs `up` (compose project smpc-demo), follows the nodes' progress and waits for the three
   hospitals and the dealer;
4. prints what each hospital learned and checks it: the hospitals agree, and, where smpc is
   importable (`make setup`), the metrics equal the plaintext twin's for the run's joint seed;
5. copies each hospital's /out to out/docker/<hospital>/ and tears everything down (containers,
   network, volumes).

Exit codes: 0 done and checked; 1 results disagree; 2 Docker, the engine or a file is missing,
or the build failed; 3 a node failed (its last error line is printed).
Uses only the standard library (smpc itself only for the plaintext check);
tests/docker/test_docker_engine.py imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKER = Path(__file__).resolve().parent
ROOT = DOCKER.parent
COMPOSE_FILE = DOCKER / "compose.yaml"
HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
NODES = ["dealer", *HOSPITALS]
RESULT = "SMPC-RESULT "  # the line a node prints its outcome on (parties/node/launcher.py)
ENGINE_LOG = Path("/tmp/smpc-dockerd.log")

EXIT_MISMATCH, EXIT_SETUP, EXIT_NODE = 1, 2, 3


class DemoError(Exception):
    """A one-line reason the demo cannot go on, and its exit code."""

    def __init__(self, message: str, code: int = EXIT_SETUP) -> None:
        super().__init__(message)
        self.code = code


def run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`argv` with output captured; a hang becomes a DemoError naming the command."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise DemoError(f"`{' '.join(argv[:4])}` did not finish within {timeout:g} s") from None


# ---------------------------------------------------------------- Docker and its engine

def docker_cli() -> str:
    """The docker command, or a DemoError saying what to install."""
    found = shutil.which("docker")
    if found is None:
        raise DemoError("Docker is not installed: install the Docker engine and Compose "
                        "(Debian/Ubuntu: apt-get install docker.io docker-compose; elsewhere: "
                        "Docker Engine from docs.docker.com/engine/install)")
    return found


def compose_cli() -> list[str]:
    """`docker compose` (v2) where it works, else `docker-compose` (1.29)."""
    if run([docker_cli(), "compose", "version"], 30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise DemoError("Docker Compose is not installed: install it (Debian/Ubuntu: apt-get "
                    "install docker-compose; elsewhere: the docker-compose-plugin package)")


def engine_problem() -> str | None:
    """Why the engine cannot be used, or None when it answers."""
    probe = run([docker_cli(), "info", "--format", "{{.ServerVersion}}"], 30)
    if probe.returncode == 0 and probe.stdout.strip():
        return None
    return (probe.stderr.strip().splitlines() or ["no answer"])[-1]


def engine_version() -> str:
    return run([docker_cli(), "version", "--format", "{{.Server.Version}}"], 30).stdout.strip()


def ensure_engine(start: bool = True, wait: float = 60) -> str | None:
    """Make sure the engine answers; start `dockerd` if it is installed, we are root, the
    default socket is meant and no service manager runs. Returns the started engine's pid as
    a hint for stopping it, or None."""
    why = engine_problem()
    if why is None:
        return None
    host = os.environ.get("DOCKER_HOST")
    how = "sudo systemctl start docker" if Path("/run/systemd/system").is_dir() else \
        f"sudo dockerd >{ENGINE_LOG} 2>&1 &"
    if "permission denied" in why.lower():
        raise DemoError(f"the Docker engine refuses this user ({why}): run as root or join the "
                        "docker group (sudo usermod -aG docker $USER, then log in again)")
    where = f"at {host} " if host else ""
    if not start or host or os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise DemoError(f"the Docker engine {where}is not running ({why}): start it ({how})")
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "start", "docker"], timeout=120, check=False)
        pid = "systemd"
    else:
        with ENGINE_LOG.open("ab") as log:
            proc = subprocess.Popen(["dockerd"], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        pid = str(proc.pid)
    end = time.monotonic() + wait
    while engine_problem() is not None:
        if time.monotonic() > end:
            raise DemoError(f"started the Docker engine but it did not answer within {wait:g} s "
                            f"(log: {ENGINE_LOG})")
        time.sleep(1)
    print(f"demo: started the Docker engine {engine_version()} (dockerd pid {pid}, log "
          f"{ENGINE_LOG}); stop it with `kill {pid}` when done", flush=True)
    return pid


def ensure_base() -> None:
    """Without docker/.env the image builds FROM python:3.11-slim: pull it, or, when no
    registry answers, build a local base from Debian packages (writes docker/.env)."""
    if (DOCKER / ".env").exists() or os.environ.get("SMPC_BASE"):
        return
    docker = docker_cli()
    if run([docker, "image", "inspect", "python:3.11-slim"], 30).returncode == 0:
        return
    if run([docker, "pull", "python:3.11-slim"], 300).returncode == 0:
        return
    print("demo: no image registry answers: building a local base image from Debian packages "
          "(docker/build-local-base.sh, about 2 minutes)", flush=True)
    built = subprocess.run(["sh", str(DOCKER / "build-local-base.sh")], timeout=1200)
    if built.returncode != 0:
        raise DemoError("docker/build-local-base.sh failed (see above)")


# ---------------------------------------------------------------- the compose project

@dataclass
class Compose:
    """One compose project of docker/compose.yaml (plus override files)."""

    project: str = "smpc-demo"
    files: list[Path] = field(default_factory=list)
    cli: list[str] = field(default_factory=compose_cli)

    def argv(self, *args: str) -> list[str]:
        files = [a for f in [COMPOSE_FILE, *self.files] for a in ("-f", str(f))]
        return [*self.cli, "--project-directory", str(DOCKER), "-p", self.project, *files,
                *args]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        done = run(self.argv(*args), timeout, cwd=ROOT)
        if check and done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["?"]
            raise DemoError(f"`{' '.join(self.cli)} {args[0]}` failed: {tail[0]}")
        return done

    def build(self, timeout: float = 1800) -> float:
        """Build the image; the seconds it took. Shows the build's last lines on failure."""
        tic = time.monotonic()
        done = run(self.argv("build", "certs"), timeout, cwd=ROOT)
        if done.returncode != 0:
            sys.stderr.write("\n".join((done.stdout + done.stderr).splitlines()[-25:]) + "\n")
            raise DemoError("the image did not build (its last lines are above)")
        return time.monotonic() - tic

    def container(self, service: str) -> str:
        """The id of `service`'s container ('' if there is none), by the labels Compose 1.29
        and v2 both set (the docker command answers faster than compose's)."""
        done = run([docker_cli(), "ps", "-aq", "--filter",
                    f"label=com.docker.compose.project={self.project}", "--filter",
                    f"label=com.docker.compose.service={service}"], 30)
        return (done.stdout.split() or [""])[0]

    def state(self, service: str) -> tuple[str, int]:
        """('running' | 'exited' | ..., exit code) of `service`'s container."""
        cid = self.container(service)
        if not cid:
            return "missing", -1
        out = run([docker_cli(), "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid],
                  30).stdout.split()
        return (out[0], int(out[1])) if len(out) == 2 else ("missing", -1)

    def logs(self, service: str) -> list[str]:
        cid = self.container(service)
        if not cid:
            return []
        done = run([docker_cli(), "logs", cid], 60)
        return (done.stdout + done.stderr).splitlines()

    def result(self, service: str) -> dict[str, Any] | None:
        """What the node printed on its result line, or None."""
        lines = [ln for ln in self.logs(service) if ln.startswith(RESULT)]
        return json.loads(lines[-1][len(RESULT):]) if lines else None

    def wait(self, services: list[str], timeout: float) -> dict[str, int | None]:
        """Wait (bounded) until every service's container has exited; exit codes, None for
        any still running at the timeout."""
        end = time.monotonic() + timeout
        codes: dict[str, int | None] = dict.fromkeys(services)
        while True:
            for s in services:
                if codes[s] is None:
                    status, code = self.state(s)
                    if status in ("exited", "dead"):
                        codes[s] = code
            if all(c is not None for c in codes.values()) or time.monotonic() > end:
                return codes
            time.sleep(1)

    def follow(self) -> subprocess.Popen[str]:
        """Print the nodes' progress lines as they come (not their result lines)."""
        proc = subprocess.Popen(self.argv("logs", "-f", "--no-color", *NODES), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if RESULT not in line:
                    print(line.rstrip("\n"), flush=True)

        threading.Thread(target=pump, daemon=True).start()
        return proc

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=180,
             check=False)


# ---------------------------------------------------------------- results

def last_error(lines: list[str]) -> str:
    """A node's last line that says why it stopped."""
    for line in reversed(lines):
        if "error" in line or "stopped" in line or "refused" in line:
            return line.split("| ", 1)[-1]
    return lines[-1] if lines else "(no output)"


def twin(seed_hex: str) -> dict[str, Any] | None:
    """The plaintext twin's metrics (same data, parameters and joint seed), or None where smpc
    is not importable."""
    sys.path.insert(0, str(ROOT))
    try:
        from dataclasses import replace

        from parties.consortium import manifest
        from parties.consortium.config import load_consortium, load_policy
        from parties.node import party
    except ImportError:
        return None
    consortium = load_consortium(DOCKER / "consortium.toml")
    protocol = manifest.resolve_protocol(consortium)
    inputs = manifest.resolve_inputs(consortium, protocol)
    tables: dict[str, list[Any]] = {}
    for name in consortium.party_names:
        policy = load_policy(DOCKER / "policies" / f"{name}.toml")
        mine = {k: DOCKER / "data" / name / Path(v).relative_to("/data")
                for k, v in policy.data.items()}
        loaded = party.load_inputs(consortium, replace(policy, data=mine), name, protocol,
                                   inputs)
        for key, table in party.plain_tables(consortium, inputs, loaded).items():
            tables.setdefault(key, []).append(table)
    params = manifest.check_parameters(consortium, protocol)
    return protocol.plaintext(tables, params, bytes.fromhex(seed_hex), None)["metrics"]


def check(results: dict[str, dict[str, Any]], tolerance: float = 0.01) -> list[str]:
    """What is wrong with the hospitals' results (empty when nothing is)."""
    problems = []
    metrics = {h: r["revealed"]["metrics"] for h, r in results.items()}
    if len({json.dumps(m, sort_keys=True) for m in metrics.values()}) != 1:
        problems.append(f"the hospitals learned different metrics: {metrics}")
    if len({r["seed"] for r in results.values()}) != 1:
        problems.append("the hospitals ran with different joint seeds")
    first = next(iter(results.values()))
    want = twin(first["seed"])
    if want is None:
        print("demo: smpc is not importable here (make setup): plaintext check skipped")
        return problems
    got = first["revealed"]["metrics"]
    print(f"plaintext twin (same data, parameters and joint seed {first['seed'][:12]}...): "
          f"accuracy {want['accuracy']:.4f}, auc {want['auc']:.4f}")
    for key in ("accuracy", "auc"):
        if abs(got[key] - want[key]) > tolerance:
            problems.append(f"{key} {got[key]:.4f} differs from the plaintext twin's "
                            f"{want[key]:.4f} by more than {tolerance}")
    return problems


def describe(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {describe(v)}" for k, v in value.items())
    if isinstance(value, list) and len(value) > 12:
        return f"{len(value)} values"
    return json.dumps(value)


def copy_out(compose: Compose, target: Path) -> None:
    for h in HOSPITALS:
        cid = compose.container(h)
        if cid:
            (target / h).mkdir(parents=True, exist_ok=True)
            run([docker_cli(), "cp", f"{cid}:/out/.", str(target / h)], 120)


# ---------------------------------------------------------------- the demo

def demo(timeout: float, keep: bool, extra: list[Path], project: str, results: Path) -> int:
    compose_cli()
    ensure_engine()
    print(f"demo: Docker engine {engine_version()}, compose: {' '.join(compose_cli())}",
          flush=True)
    for h in HOSPITALS:
        if not (DOCKER / "data" / h).is_dir():
            raise DemoError(f"{DOCKER / 'data' / h}: no such folder (the data {h} mounts)")
    ensure_base()
    compose = Compose(project=project, files=extra)
    print("demo: building the image (docker/Dockerfile)...", flush=True)
    print(f"demo: built in {compose.build():.0f} s", flush=True)
    compose.down()
    try:
        tic = time.monotonic()
        compose("up", "-d", "--no-build", timeout=300)
        follower = compose.follow()
        codes = compose.wait(NODES, timeout)
        follower.terminate()
        seconds = time.monotonic() - tic
        print(f"demo: the run took {seconds:.0f} s")
        return report(compose, codes, results)
    finally:
        copy_out(compose, results)
        if keep:
            print(f"demo: kept the containers and volumes (project {compose.project})")
        else:
            compose.down()


def report(compose: Compose, codes: dict[str, int | None], results_dir: Path) -> int:
    failed = {n: c for n, c in codes.items() if c != 0}
    if failed:
        for node, code in failed.items():
            state = "still running at the timeout" if code is None else f"exited {code}"
            print(f"{node} {state}: {last_error(compose.logs(node))}", file=sys.stderr)
        return EXIT_NODE
    results = {h: compose.result(h) for h in HOSPITALS}
    missing = [h for h, r in results.items() if r is None]
    if missing:
        print(f"demo: no result line from {', '.join(missing)}", file=sys.stderr)
        return EXIT_NODE
    print("\nwhat each hospital learned:")
    for h, r in results.items():
        for name, value in r["revealed"].items():
            if value is not None:
                print(f"  {h} learned {name}: {describe(value)}")
    problems = check(results)  # type: ignore[arg-type]
    for p in problems:
        print(f"demo: {p}", file=sys.stderr)
    if not problems:
        print("demo: the three hospitals agree, and their metrics equal the plaintext twin's; "
              f"their /out folders are copied to {results_dir}/")
    return EXIT_MISMATCH if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="docker/demo.py", description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds the run may take (default 600)")
    ap.add_argument("--keep", action="store_true", help="leave the containers and volumes")
    ap.add_argument("-f", dest="extra", action="append", type=Path, default=[],
                    help="an extra compose file layered over docker/compose.yaml")
    ap.add_argument("--project", default="smpc-demo", help="compose project name")
    ap.add_argument("--results", type=Path, default=ROOT / "out" / "docker",
                    help="where each hospital's /out is copied (default out/docker)")
    args = ap.parse_args(argv)
    try:
        return demo(args.timeout, args.keep, args.extra, args.project, args.results)
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
