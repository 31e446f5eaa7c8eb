"""`sds show VERSION`: one version's manifest, after verifying its artifacts."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from sds.cli.arguments import Commands, env_option, version_argument, workspace
from sds.cli.render import fmt, print_json
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "show",
        run,
        "show one version's manifest (verifies its artifacts)",
        ["sds show 3", "sds show 3 --env staging --json"],
    )
    version_argument(parser, "version")
    env_option(parser, "--env", default_first=True)


def data_phrase(data: Mapping[str, Any]) -> str:
    """What a version was trained on, as its manifest's `data` records it: a history's events, or
    an environment's captured payments in a window, with the labels known by `as_of`; and the
    data's fingerprint."""
    if not data:
        return "not recorded"
    if data.get("source") == "capture":
        what = (
            f"{data.get('payments')} payments captured in {data.get('env')} from "
            f"{data.get('since')} until {data.get('until')}, labels as of {data.get('as_of')}"
        )
    else:
        what = (
            f"{data.get('events')} events ({data.get('payments')} payments) from {data.get('uri')}"
        )
    return f"{what}, fingerprint {str(data.get('fingerprint'))[:12]}..."


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import flagged_phrase, verified_version

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    version = verified_version(ws, env.name, ws.registry(env.name), args.version)
    manifest = dict(version.manifest)
    if args.json:
        print_json(manifest)
        return 0
    data = manifest.get("data", {})
    print(f"{ws.model} version {version.number} ({env.name}: {ws.registry_uri(env.name)})")
    print(f"  sha256        {version.sha256}  (verified)")
    print(f"  created       {manifest.get('created_at')} by {manifest.get('created_by')}")
    print(f"  code          {manifest.get('code_version') or 'not recorded'}")
    print(f"  data          {data_phrase(data)}")
    # In full: rounded, it could print above the scores it flags (0.6910 for 0.690989077...).
    threshold = manifest.get("decision_threshold")
    print(f"  threshold     {repr(threshold) if isinstance(threshold, float) else fmt(threshold)}")
    metrics = version.metrics
    for key, value in sorted(metrics.items()):
        # Precision@alert is measured over the share the threshold flags, which tied scores can
        # take above the target alert rate: the line says which.
        where = flagged_phrase(metrics) if key == "precision_at_alert_rate" else ""
        print(f"  {key:<28}{fmt(value)}{' ' + where if where else ''}")
    params = ", ".join(f"{k}={v}" for k, v in sorted(manifest.get("params", {}).items()))
    print(f"  params        {params}")
    if manifest.get("source"):
        print(f"  copied from   {manifest['source'].get('registry')}")
    return 0
