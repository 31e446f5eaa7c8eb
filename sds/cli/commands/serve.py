"""`sds serve`: the inference API on this machine, over the real handler, following the
environment's pin (a promote or rollback takes effect on the next request)."""

from __future__ import annotations

import argparse
import json
import logging

from sds.cli.arguments import Commands, env_option, workspace
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "serve",
        run,
        "run the inference API locally, following the environment's pin",
        ["sds serve --env dev", "sds serve --env staging --port 8081 --json"],
    )
    env_option(parser, "--env", default_first=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)


def run(args: argparse.Namespace) -> int:
    from sds.ops.local_api import LocalApi, PinnedApps

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    apps = PinnedApps.for_environment(ws, env.name)
    api = LocalApi(apps, host=args.host, port=args.port)
    current = apps.current()
    state = (
        f"{ws.model} v{current.model.version}"
        if current.model is not None
        else f"no model ({current.unavailable})"
    )
    if args.json:  # one line, so a script can read the URL and go on
        started = {
            "url": api.url,
            "env": env.name,
            "model": ws.model,
            "model_version": None if current.model is None else current.model.version,
            "unavailable": current.unavailable,
            "lock_file": str(ws.lock_path),
        }
        print(json.dumps(started, sort_keys=True), flush=True)
    else:
        print(
            f"serving {env.name} on {api.url} ({state}); "
            f"follows the {env.name} pin in {ws.lock_path}"
        )
        print(f"try: curl -s {api.url}/health   |   Ctrl-C stops", flush=True)
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api.server.server_close()
    return 0
