"""Install each peer load tool, pinned, in its own virtual environment under `.cache/peers/<tool>/venv`.

Idempotent: a peer whose stamp file (`.cache/peers/<tool>/installed.json`) names the pinned version and whose
command still runs `--help` is skipped in well under a second. The pins live in `bench/peers/peers.toml`.

    .venv/bin/python -m bench.peers install                 # every peer
    .venv/bin/python -m bench.peers install aiperf --force  # one peer, from scratch
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS_TOML = Path(__file__).with_name("peers.toml")
CACHE = REPO / ".cache" / "peers"


class PeerError(RuntimeError):
    """A peer that cannot be installed or run; the message is one line for the table."""


@dataclass(frozen=True)
class PeerSpec:
    """One tool from peers.toml."""

    name: str
    package: str = ""
    version: str = ""
    command: str = ""
    ignore_requires_python: bool = False
    external: str = ""
    """A tool that comes with another environment (vllm bench serve): its executable, relative to the repo."""
    version_from: str = ""
    """For an external tool: the distribution whose version is reported."""

    @property
    def home(self) -> Path:
        return CACHE / self.name

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def executable(self) -> Path:
        return REPO / self.external if self.external else self.venv / "bin" / self.command

    @property
    def python(self) -> Path:
        return self.executable.parent / "python"

    @property
    def stamp(self) -> Path:
        return self.home / "installed.json"


@dataclass(frozen=True)
class Config:
    interpreter: str
    constraints: list[str]
    peers: dict[str, PeerSpec] = field(default_factory=dict)


def load_config(path: Path = PEERS_TOML) -> Config:
    """Read peers.toml into specs (a missing key is a KeyError naming it: the file is ours, not the user's)."""
    data = tomllib.loads(path.read_text())
    peers = {name: PeerSpec(name=name, **entry) for name, entry in data["peers"].items()}
    return Config(data["python"]["interpreter"], list(data["python"].get("constraints", [])), peers)


def installed_version(spec: PeerSpec) -> str:
    """The version the tool's environment really holds (importlib.metadata), or raise PeerError."""
    dist = spec.version_from or spec.package
    if not spec.python.exists():
        raise PeerError(f"{spec.name}: not installed ({spec.python} missing; run `python -m bench.peers install`)")
    proc = subprocess.run(
        [str(spec.python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PeerError(f"{spec.name}: {dist} not importable: {_last_line(proc.stderr)}")
    return proc.stdout.strip()


def check(spec: PeerSpec) -> str:
    """Raise PeerError unless the tool's command answers `--help`; return its installed version."""
    version = installed_version(spec)
    args = [str(spec.executable), "bench", "serve", "--help"] if spec.external else [str(spec.executable), "--help"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=peer_env())
    if proc.returncode != 0:
        raise PeerError(f"{spec.name}: `{' '.join(args[1:])}` failed: {_last_line(proc.stderr or proc.stdout)}")
    return version


def install(spec: PeerSpec, config: Config, force: bool = False, log=print) -> str:
    """Create the peer's venv and pip-install the pinned package; return the installed version."""
    if spec.external:
        return check(spec)
    if not force and spec.stamp.exists():
        stamp = json.loads(spec.stamp.read_text())
        if stamp.get("version") == spec.version and spec.executable.exists():
            return stamp["version"]
    if spec.venv.exists():
        shutil.rmtree(spec.venv)
    spec.home.mkdir(parents=True, exist_ok=True)
    log(f"{spec.name}: creating {spec.venv.relative_to(REPO)} and installing {spec.package}=={spec.version}")
    t0 = time.monotonic()
    _run([config.interpreter, "-m", "venv", str(spec.venv)], spec)
    constraints = spec.home / "constraints.txt"
    constraints.write_text("".join(c + "\n" for c in config.constraints))
    pip = [str(spec.venv / "bin" / "python"), "-m", "pip", "install", "--no-input", "-c", str(constraints)]
    _run([*pip, "--upgrade", "pip"], spec)
    if spec.ignore_requires_python:
        # `pip install --ignore-requires-python PKG` would also ignore it for every dependency and pick releases
        # that need the newer Python (numpy 2.5 builds from source, then refuses 3.11). So: the dependencies as
        # declared, resolved for this Python, then the package itself without its Requires-Python check.
        wheel_dir = spec.home / "wheel"
        _run([*pip[:3], "download", "--no-deps", "--ignore-requires-python", "-d", str(wheel_dir),
              f"{spec.package}=={spec.version}"], spec)  # fmt: skip
        _run([*pip, *wheel_requirements(wheel_dir, spec)], spec)
        _run([*pip, "--no-deps", "--ignore-requires-python", f"{spec.package}=={spec.version}"], spec)
    else:
        _run([*pip, f"{spec.package}=={spec.version}"], spec)
    version = installed_version(spec)
    if version != spec.version:
        raise PeerError(f"{spec.name}: pip installed {version}, not the pinned {spec.version}")
    check(spec)
    freeze = subprocess.run([str(spec.python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    spec.stamp.write_text(
        json.dumps(
            {
                "package": spec.package,
                "version": version,
                "ignore_requires_python": spec.ignore_requires_python,
                "python": config.interpreter,
                "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.monotonic() - t0, 1),
                "freeze": freeze.splitlines(),
            },
            indent=1,
        )
    )
    log(f"{spec.name}: {version} installed in {time.monotonic() - t0:.0f} s")
    return version


def wheel_requirements(wheel_dir: Path, spec: PeerSpec) -> list[str]:
    """The unconditional `Requires-Dist` lines of the downloaded wheel (extras left out)."""
    name = spec.package.replace("-", "_")
    wheels = sorted(wheel_dir.glob(f"{name}-{spec.version}-*.whl"))
    if not wheels:
        raise PeerError(f"{spec.name}: no wheel of {spec.package}=={spec.version} in {wheel_dir}")
    with zipfile.ZipFile(wheels[0]) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]
    return [r for r in reqs if "extra ==" not in r]


def peer_env(**extra: str) -> dict[str, str]:
    """The environment every peer runs in: no model hub, no telemetry, no colours in logs."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        DO_NOT_TRACK="1",
        NO_COLOR="1",
        TERM="dumb",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


def _run(cmd: list[str], spec: PeerSpec) -> None:
    log_path = spec.home / "install.log"
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=peer_env())
    if proc.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise PeerError(f"{spec.name}: `{' '.join(cmd[2:5])} ...` failed: {tail[0]} (see {log_path})")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"


def main(names: list[str], force: bool = False) -> int:
    """Install the named peers (all when empty); one line per peer; exit 1 if any failed."""
    config = load_config()
    unknown = [n for n in names if n not in config.peers]
    if unknown:
        print(f"bench.peers install: unknown peer {unknown[0]!r} (known: {', '.join(config.peers)})", file=sys.stderr)
        return 2
    failed = 0
    for name in names or list(config.peers):
        try:
            version = install(config.peers[name], config, force=force)
            print(f"{name}: {version} ok")
        except (PeerError, subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"{name}: could not install: {exc}", file=sys.stderr)
    return 1 if failed else 0
