"""`python -m gateway`: run the gateway, make key hashes, check a config.

    python -m gateway --config gateway.yaml [--upstream URL] [--host H] [--port P]
    python -m gateway hash-key --generate     # prints a new key (once) and the hash to put in the config
    python -m gateway hash-key < key.txt      # the hash of an existing key, read from standard input
    python -m gateway check-config --config gateway.yaml

User mistakes (bad config, bad or unreachable upstream URL, port taken) are one line on standard error and a
non-zero exit: 2 for invalid input, 1 for the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlab.core.errors import ConfigError, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="Gateway config YAML (see gateway/example.yaml).")
    parser.add_argument("--upstream", help="Upstream base URL; replaces the config's `upstream`.")
    parser.add_argument("--host", help="Listen address; replaces listen.host.")
    parser.add_argument("--port", type=int, help="Listen port; replaces listen.port.")
    parser.add_argument(
        "--no-upstream-check", action="store_true", help="Start even if the upstream's /health does not answer 200."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    hk = sub.add_parser("hash-key", help="Print the salted hash of a key (read from stdin) or of a new one.")
    hk.add_argument("--generate", action="store_true", help="Make a new random key; print it once, then its hash.")
    cc = sub.add_parser("check-config", help="Validate a config file and print what it sets up.")
    cc.add_argument("--config", dest="check_config", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "hash-key":
            return _hash_key(args.generate)
        if args.command == "check-config":
            return _check(args.check_config)
        if args.config is None:
            raise UserError("--config FILE is required to run the gateway", exit_code=2)
        return serve(args.config, upstream=args.upstream, host=args.host, port=args.port,
                     check_upstream=not args.no_upstream_check)  # fmt: skip
    except UserError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _hash_key(generate: bool) -> int:
    from gateway.config import generate_key, hash_key

    if generate:
        key = generate_key()
        print(f"key:  {key}    (shown once: give it to the client; the gateway keeps only the hash)")
        print(f"hash: {hash_key(key)}")
        return 0
    if sys.stdin.isatty():
        print("key (input hidden is not supported; paste it and press Enter): ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline().strip()
    if not line:
        raise UserError("no key on standard input (or use --generate)", exit_code=2)
    print(hash_key(line))
    return 0


def _check(path: Path) -> int:
    from gateway.config import load_config

    config = load_config(path)
    print(f"{path}: ok; upstream {config.upstream}; listen {config.listen.host}:{config.listen.port}")
    for key in config.keys:
        print(f"  key {key.id}: {config.limits_for(key).model_dump(exclude_none=True) or 'no limits'}")
    return 0


def upstream_problem(url: str) -> str | None:
    """None when GET <url>/health answers 200, else what went wrong (one phrase)."""
    from vlab.client.http import http_get

    status, _ = http_get(f"{url}/health", timeout_s=3.0)
    if status == 200:
        return None
    return "no answer (connection refused or timed out)" if status == 0 else f"GET /health answered HTTP {status}"


def serve(
    config_path: Path,
    *,
    upstream: str | None = None,
    host: str | None = None,
    port: int | None = None,
    check_upstream: bool = True,
) -> int:
    """Load the config and run the gateway under uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    from gateway.app import create_app
    from gateway.config import check_upstream_url, load_config
    from vlab.client.http import port_in_use

    if upstream is not None:
        try:
            upstream = check_upstream_url(upstream)
        except ValueError as exc:
            raise ConfigError(f"--upstream: {exc}") from None
    config = load_config(config_path, upstream=upstream)
    if port is not None and not 1 <= port <= 65535:
        raise UserError(f"--port {port}: expected 1-65535", exit_code=2)
    listen = config.listen.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    config = config.model_copy(update={"listen": listen})
    if port_in_use(listen.host, listen.port):
        raise UserError(f"port {listen.port} on {listen.host} is already in use (set listen.port or --port)")
    if check_upstream:
        problem = upstream_problem(config.upstream)
        if problem is not None:
            raise UserError(f"upstream {config.upstream} is not usable: {problem} (or pass --no-upstream-check)")
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=listen.host, port=listen.port, log_level="warning", access_log=False, lifespan="on",
            timeout_keep_alive=30, backlog=2048, server_header=False,
        )
    )  # fmt: skip
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
