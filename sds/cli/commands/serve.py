"""`sds serve`: the inference API on this machine, over the real handler, following the
environment's pin (a promote or rollback takes effect on the next request).

Ctrl-C or SIGTERM (`docker stop`, systemd, `kill`) stops it gracefully, as uvicorn and gunicorn
stop: no new connection is accepted, the requests in flight are answered (for up to
`GRACE_SECONDS`), and it exits 0 (1 if some were still unanswered then). A second Ctrl-C stops it
at once (exit 130)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from typing import TYPE_CHECKING

from sds.cli.arguments import Commands, env_option, port_number, positive_count, workspace
from sds.config import EnvironmentConfig
from sds.kernel.errors import SdsError, counted
from sds.kernel.signals import stop_reason

if TYPE_CHECKING:
    from lambdas.inference.app import InferenceApp
    from sds.ops.local_api import LocalApi

LIMIT_CONCURRENCY = 64
"""Connections handled at once by default (uvicorn's `--limit-concurrency`): `ConnectionLimits`'
default (a test keeps them equal), written here so that parsing arguments imports no server."""

GRACE_SECONDS = 30.0
"""How long a stopping server waits for the requests in flight (gunicorn's `graceful_timeout`)."""


def register(commands: Commands) -> None:
    parser = commands.add(
        "serve",
        run,
        "run the inference API locally, following the environment's pin",
        ["sds serve --env dev", "sds serve --env staging --port 8081 --json"],
    )
    env_option(
        parser, "--env", default_first=True, help="whose pinned model to serve (default: the first)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every "
        "interface)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=8080,
        help="the TCP port, 0 to 65535 (0: any free one; default: 8080)",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=positive_count,
        default=LIMIT_CONCURRENCY,
        metavar="N",
        help="the connections handled at once, a kept-alive one included while it is open; one "
        f"more is answered 503 with Retry-After: 1 at once (default: {LIMIT_CONCURRENCY})",
    )


def run(args: argparse.Namespace) -> int:
    from sds.ops.local_api import ConnectionLimits, LocalApi, PinnedApps

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # The served function's lines, not the AWS SDK's chatter ("Found credentials in ...").
    for sdk in ("botocore", "boto3", "urllib3"):
        logging.getLogger(sdk).setLevel(logging.WARNING)
    apps = PinnedApps.for_environment(ws, env.name)
    try:
        limits = ConnectionLimits(limit_concurrency=args.limit_concurrency)
        api = LocalApi(apps, host=args.host, port=args.port, limits=limits)
    except OSError as exc:
        raise SdsError(_cannot_listen(args.host, args.port, exc)) from None
    current = apps.current()
    try:  # from here on, Ctrl-C and SIGTERM stop the server gracefully
        # Started inside: a signal while it starts (a client may already be connected) must
        # stop it as gracefully as one later.
        api.start()
        _announce(args, ws.model, str(ws.lock_path), env.name, api.url, current)
        api.wait()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (sds.kernel.signals)
        how, _ = stop_reason(exc)
        print(f"sds serve: {how}: finishing the requests in flight", file=sys.stderr, flush=True)
        # Inside the `except`: a repeated SIGTERM is ignored while the interruption is handled.
        return _stop(api)
    return _stop(api)  # the server stopped by itself


def _stop(api: LocalApi) -> int:
    unanswered = api.stop(grace_s=GRACE_SECONDS)
    if unanswered:
        print(
            f"sds serve: stopped; {counted(unanswered, 'request')} unanswered after "
            f"{GRACE_SECONDS:.0f} s",
            file=sys.stderr,
        )
        return 1
    print("sds serve: stopped", file=sys.stderr)
    return 0


def _announce(
    args: argparse.Namespace, model: str, lock_file: str, env: str, url: str, current: InferenceApp
) -> None:
    state = (
        f"{model} v{current.model.version}"
        if current.model is not None
        else f"no model ({current.unavailable})"
    )
    if args.json:  # one line, so a script can read the URL and go on
        started = {
            "url": url,
            "env": env,
            "model": model,
            "model_version": None if current.model is None else current.model.version,
            "unavailable": current.unavailable,
            "lock_file": lock_file,
        }
        print(json.dumps(started, sort_keys=True), flush=True)
    else:
        print(f"serving {env} on {url} ({state}); follows the {env} pin in {lock_file}")
        print(f"try: curl -s {url}/health   |   Ctrl-C stops", flush=True)


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    from sds.ops.local_api import host_in_url

    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        hint = "; is another server on it? choose another --port (0 takes any free one)"
    elif exc.errno == errno.EACCES:
        hint = "; ports below 1024 need privileges: choose --port 1024 or more"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "; --host takes an address of this machine (127.0.0.1, or 0.0.0.0 for all of them)"
    else:
        hint = ""
    return f"cannot listen on {host_in_url(host)}:{port}: {reason.lower()}{hint}"
