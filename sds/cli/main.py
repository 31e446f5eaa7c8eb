"""`sds`: train, register, promote, roll back and serve models, per environment.

Exit codes: 0 done (or nothing to do), 1 error, 2 usage error, 3 refused (a promotion gate
failed, or a concurrent change won). Errors are one line on stderr; `--json` prints
machine-readable results on stdout, and errors there as `{"error": {...}}`.

Local mode is the zero-config default. `--aws` (or `SDS_TARGET=aws`) works against the deployed
stacks instead: registries come from SSM `/sds/<env>/registry-bucket` (unless
`SDS_REGISTRY_<ENV>` names one), `rollback` switches the Lambda alias `live`, and
`train --on-fargate` runs the training task.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sds import __version__
from sds.config import ConfigError
from sds.kernel.lock import LockFileError, read_lock
from sds.kernel.registry import RegistryError
from sds.ops.aws import AwsError
from sds.ops.status import EnvironmentStatus, moved
from sds.ops.workspace import Workspace

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

EPILOG = """examples:
  sds generate --events 100000 --out data/events.jsonl.gz
  sds train --data data/events.jsonl.gz --reason "weekly retrain"
  sds models
  sds promote 3 --to dev --reason "better PR AUC"
  sds promote --from dev --to staging --reason "passed dev checks"
  sds status
  sds rollback --env dev --reason "false positives spiking"
  sds --aws status --env prod
  sds --aws rollback --env prod --reason "alarm on false positives"
  sds --aws train --env dev --on-fargate --reason "weekly retrain"
  sds history --env dev
  sds serve --env dev --port 8080

every command takes --json (results on stdout; errors as {"error": {...}}) and has its own
--help with examples. --aws (or SDS_TARGET=aws) works against the deployed stacks.

exit codes: 0 done (or nothing to do), 1 error (or `status --check` found a disagreement),
2 usage error, 3 refused (a promotion gate failed, or a concurrent change won).

shell completion: eval "$(sds completion bash)"   (also zsh, fish, tcsh, powershell)
"""


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 4) -> str:
    return (
        f"{value:.{digits}f}"
        if isinstance(value, float)
        else ("-" if value is None else str(value))
    )


def _workspace(args: argparse.Namespace) -> Workspace:
    return Workspace.discover(
        project_dir=Path(args.project_dir) if args.project_dir else None,
        target="aws" if getattr(args, "aws", False) else None,
    )


def _env(ws: Workspace, args: argparse.Namespace) -> str:
    env: str = args.env or ws.config.first_environment
    ws.config.env(env)
    return env


# Commands -------------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from training.data import generate_events, write_jsonl

    events = generate_events(args.events, seed=args.seed)
    path = write_jsonl(events, Path(args.out))
    fraud = sum(e["is_fraud"] for e in events)
    if args.json:
        _print_json({"path": str(path), "events": len(events), "fraud": fraud})
    else:
        print(f"wrote {len(events)} events ({fraud} fraud, {fraud / len(events):.1%}) to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.params import params_from_args
    from training.train import Progress, train

    if args.on_fargate:
        return _train_on_fargate(args)
    ws = _workspace(args)
    env = _env(ws, args)
    if not args.data:
        raise CliError(
            "--data is required: a .jsonl[.gz] file, a directory or s3://bucket/prefix "
            "(make some with: sds generate --out data/events.jsonl.gz)",
            EXIT_USAGE,
        )
    try:
        params = params_from_args(args)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    version = train(
        data=args.data,
        registry=ws.registry(env),
        params=params,
        actor=ws.actor,
        reason=args.reason,
        progress=Progress(7, enabled=not args.quiet),
    )
    if args.json:
        _print_json(dict(version.manifest))
    else:
        m = version.metrics
        print(
            f"registered {ws.model} version {version.number} in {env} "
            f"(ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}, sha256 {version.sha256[:12]}...)"
        )
    return 0


def _train_on_fargate(args: argparse.Namespace) -> int:
    from sds.ops.fargate import run_training

    args.aws = True  # the task, its network and the registry are the deployed environment's
    ws = _workspace(args)
    env = _env(ws, args)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    run = run_training(ws, env=env, reason=args.reason, data=args.data, say=say)
    if args.json:
        _print_json(run.to_dict())
    else:
        m = run.version.metrics
        print(
            f"registered {ws.model} version {run.version.number} in {env} on Fargate "
            f"in {run.duration_s:.0f} s (ROC AUC {m.get('roc_auc', float('nan')):.4f}, "
            f"sha256 {run.version.sha256[:12]}...)"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from sds.ops.promotion import model_table

    ws = _workspace(args)
    env = _env(ws, args)
    rows = model_table(ws, env)
    if args.json:
        _print_json({"env": env, "registry": ws.registry_uri(env), "versions": rows})
        return 0
    if not rows:
        print(f"no versions in {env}'s registry ({ws.registry_uri(env)}); train one with sds train")
        return 0
    print(
        _table(
            [
                [
                    str(r["version"]),
                    str(r["created_at"])[:19].replace("T", " "),
                    _fmt(r["roc_auc"]),
                    _fmt(r["pr_auc"]),
                    _fmt(r["precision_at_alert_rate"]),
                    _fmt(r["expected_calibration_error"]),
                    ", ".join(r["live_in"]) or "-",
                ]
                for r in rows
            ],
            ["VERSION", "CREATED (UTC)", "ROC_AUC", "PR_AUC", "PREC@ALERT", "ECE", "LIVE IN"],
        )
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    env = _env(ws, args)
    version = ws.registry(env).verify_version(args.version)
    manifest = dict(version.manifest)
    if args.json:
        _print_json(manifest)
        return 0
    data = manifest.get("data", {})
    print(f"{ws.model} version {version.number} ({env}: {ws.registry_uri(env)})")
    print(f"  sha256        {version.sha256}  (verified)")
    print(f"  created       {manifest.get('created_at')} by {manifest.get('created_by')}")
    print(f"  code          {manifest.get('code_version')}")
    print(
        f"  data          {data.get('events')} events, fingerprint {str(data.get('fingerprint'))[:12]}..."
    )
    print(f"  threshold     {_fmt(manifest.get('decision_threshold'))}")
    for key, value in sorted(version.metrics.items()):
        print(f"  {key:<28}{_fmt(value)}")
    params = ", ".join(f"{k}={v}" for k, v in sorted(manifest.get("params", {}).items()))
    print(f"  params        {params}")
    if manifest.get("source"):
        print(f"  copied from   {manifest['source'].get('registry')}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from sds.ops.promotion import promote
    from sds.progress import Progress

    if args.version is None and args.from_env is None:
        raise CliError("say which version: sds promote VERSION --to ENV, or --from ENV", EXIT_USAGE)
    ws = _workspace(args)
    what = (
        f"version {args.version}"
        if args.version is not None
        else f"what is live in {args.from_env}"
    )
    progress = Progress(0, enabled=not args.quiet)
    with progress.uploading(f"copying {what} into {args.to}'s registry") as on_upload:
        change = promote(
            ws,
            to_env=args.to,
            version=args.version,
            from_env=args.from_env,
            reason=args.reason,
            on_upload=on_upload,
        )
    if args.json:
        _print_json(change.to_dict())
    elif not change.changed:
        print(f"{args.to} already serves version {change.version}; nothing to do")
    else:
        before = "nothing" if change.previous is None else f"version {change.previous}"
        copied = f", copied from {change.copied_from}" if change.copied_from else ""
        print(f"{args.to}: {before} -> version {change.version}{copied}")
        for gate in change.gates:
            print(f"  gate {gate.gate}: passed ({gate.detail})")
        print(f"  pin written to {ws.lock_path.name}: deploy with: cdk deploy '{args.to}/*'")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from sds.ops.promotion import rollback

    ws = _workspace(args)
    ws.config.env(args.env)
    if ws.on_aws:
        return _rollback_live(ws, args)
    change = rollback(ws, env=args.env, to_version=args.to, reason=args.reason)
    if args.json:
        _print_json(change.to_dict())
    elif not change.changed:
        print(f"{args.env} already serves version {change.version}; nothing to do")
    else:
        print(
            f"{args.env}: version {change.previous} -> version {change.version} "
            f"(rolled back in {change.duration_ms:.0f} ms; pin updated in {ws.lock_path.name})"
        )
    return 0


def _rollback_live(ws: Workspace, args: argparse.Namespace) -> int:
    from sds.ops.aws_rollback import rollback_live

    done = rollback_live(ws, env=args.env, to_version=args.to, reason=args.reason)
    if args.json:
        _print_json(done.to_dict())
        return 0
    if not done.changed:
        print(
            f"{args.env} already serves model version {done.version} "
            f"(Lambda {done.function}:{done.alias} -> version {done.lambda_to}); nothing to do"
        )
        return 0
    if done.lambda_from == done.lambda_to:
        switched = f"already on Lambda version {done.lambda_to}, which serves it"
    else:
        switched = f"Lambda version {done.lambda_from} -> {done.lambda_to}"
    print(
        f"{args.env}: model version {done.previous} -> {done.version}; "
        f"alias {done.alias} of {done.function}: {switched} (no routing weights)"
    )
    for deployment in done.stopped_deployments:
        print(f"  stopped CodeDeploy deployment {deployment} first (without its own rollback)")
    print(
        f"  registry alias moved and audited; pin rewritten in {ws.lock_path.name}: commit it "
        "so the next deploy keeps the rollback"
    )
    print(f"  done in {done.duration_ms:.0f} ms")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from sds.ops.promotion import history

    ws = _workspace(args)
    ws.config.env(args.env)
    events = history(ws, args.env)
    if args.json:
        _print_json(events)
        return 0
    if not events:
        print(f"no events in {args.env}'s registry yet")
        return 0
    rows = [
        [
            str(e.get("at", ""))[:23].replace("T", " "),
            str(e.get("type")),
            str(e.get("version")),
            _fmt(e.get("from_version")),
            str(e.get("by")),
            str(e.get("reason") or "-"),
        ]
        for e in events
    ]
    print(_table(rows, ["TIME (UTC)", "EVENT", "VERSION", "FROM", "BY", "REASON"]))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sds.ops.local_api import LocalApi, PinnedApps

    ws = _workspace(args)
    env = _env(ws, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    apps = PinnedApps.for_environment(ws, env)
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
            "env": env,
            "model": ws.model,
            "model_version": None if current.model is None else current.model.version,
            "unavailable": current.unavailable,
            "lock_file": str(ws.lock_path),
        }
        print(json.dumps(started, sort_keys=True), flush=True)
    else:
        print(f"serving {env} on {api.url} ({state}); follows the {env} pin in {ws.lock_path}")
        print(f"try: curl -s {api.url}/health   |   Ctrl-C stops", flush=True)
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api.server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sds.ops.demo import run_demo

    ws = _workspace(args)
    return run_demo(ws, events=args.events, keep=args.keep, as_json=args.json)


def cmd_envs(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    lock = read_lock(ws.lock_path, model=ws.model)
    rows: list[dict[str, Any]] = []
    for name, env in ws.config.environments.items():
        pin = lock.pins.get(name)
        try:
            registry = ws.registry_uri(name)
        except AwsError as exc:  # with --aws, an environment that is not deployed (yet)
            registry = f"(not found: {exc})"
        rows.append(
            {
                "env": name,
                "promote_from": env.promote_from,
                "registry": registry,
                "pin": None if pin is None else pin.to_dict(),
            }
        )
    if args.json:
        _print_json(rows)
        return 0
    print(
        _table(
            [
                [
                    str(r["env"]),
                    str(r["promote_from"] or "-"),
                    "-" if r["pin"] is None else f"v{r['pin']['version']}",
                    str(r["registry"]),
                ]
                for r in rows
            ],
            ["ENV", "PROMOTED FROM", "PIN", "REGISTRY"],
        )
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sds.ops.status import status

    ws = _workspace(args)
    results = status(ws, [args.env] if args.env else None)
    ok = all(r.ok for r in results)
    if args.json:
        _print_json(
            {
                "target": ws.target,
                "lock_file": str(ws.lock_path),
                "ok": ok,
                "environments": [r.to_dict() for r in results],
            }
        )
    elif args.env:
        print(_status_detail(results[0], ws))
    else:
        print(_status_table(results, aws=ws.on_aws))
        for r in results:
            for line in ([r.error] if r.error else []) + r.warnings:
                print(f"warning: {r.env}: {line}")
        if not ws.on_aws:
            print("(local target: the API follows the pin; add --aws for the deployed Lambda)")
    return EXIT_ERROR if args.check and not ok else 0


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _sha(sha256: str | None) -> str:
    return "-" if not sha256 else f"{sha256[:12]}..."


def _status_table(results: list[EnvironmentStatus], *, aws: bool) -> str:
    headers = ["ENV", "PIN", "REGISTRY"] + (["LAMBDA", "DEPLOYMENT"] if aws else []) + ["STATE"]
    rows = []
    for r in results:
        row = [
            r.env,
            _version(None if r.pin is None else r.pin.version),
            _version(None if r.alias is None else r.alias.version),
        ]
        if aws:
            live = "-"
            if r.live is not None:
                live = _version(r.live.primary.model_version)
                live += "".join(
                    f" +{s.weight:.0%} {_version(s.model_version)}" for s in r.live.served[1:]
                )
            deploying = ", ".join(f"{d.id} {d.status}" for d in r.deployments) or "-"
            row += [live, deploying]
        rows.append([*row, r.state])
    return _table(rows, headers)


def _status_detail(r: EnvironmentStatus, ws: Workspace) -> str:
    lines = [f"{r.env} ({r.target}): {r.state}"]

    def line(label: str, value: str) -> None:
        lines.append(f"  {label:<11}{value}")

    pin = r.pin
    line(
        "pin",
        f"{_version(None if pin is None else pin.version)}  sha256 {_sha(None if pin is None else pin.sha256)}  ({ws.lock_path.name})",
    )
    alias = r.alias
    how = "" if alias is None else f", {moved(alias)}"
    line(
        "registry",
        f"{_version(None if alias is None else alias.version)}  sha256 {_sha(None if alias is None else alias.sha256)}  "
        f"({r.registry_uri or '?'}{how})",
    )
    if r.live is not None:
        first = r.live.primary
        line(
            "lambda",
            f"{_version(first.model_version)}  sha256 {_sha(first.sha256)}  "
            f"({r.live.function}:{r.live.alias} -> Lambda version {first.function_version})",
        )
        for s in r.live.served[1:]:
            line(
                "",
                f"+ {s.weight:.0%} of requests to Lambda version {s.function_version} "
                f"({_version(s.model_version)}, sha256 {_sha(s.sha256)})",
            )
    elif r.target == "local" and r.error is None:
        line("lambda", "not checked locally (the local API follows the pin); add --aws")
    for d in r.deployments:
        moving = f", Lambda version {d.from_version} -> {d.to_version}" if d.to_version else ""
        line("deployment", f"{d.id} {d.status} since {d.created[:19].replace('T', ' ')}{moving}")
    if r.target == "aws" and not r.deployments and r.error is None:
        line("deployment", "none in progress")
    for message in ([r.error] if r.error else []) + r.warnings:
        lines.append(f"warning: {message}")
    return "\n".join(lines)


# Parser ---------------------------------------------------------------------------------------


def _completion_workspace(parsed_args: argparse.Namespace) -> Workspace:
    project_dir = getattr(parsed_args, "project_dir", None)
    return Workspace.discover(project_dir=Path(project_dir) if project_dir else None)


def _complete_env(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Environment names from cdk.json, for --env, --to and --from."""
    try:
        ws = _completion_workspace(parsed_args)
    except (ConfigError, OSError):
        return []
    return [name for name in ws.config.environments if name.startswith(prefix)]


def _complete_version(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Version numbers in the environment's local registry (no network calls while typing)."""
    try:
        ws = _completion_workspace(parsed_args)
        if ws.on_aws or getattr(parsed_args, "aws", False):
            return []
        env = (
            getattr(parsed_args, "from_env", None)
            or getattr(parsed_args, "env", None)
            or ws.config.first_environment
        )
        versions = ws.registry(env).list_versions()
    except (ConfigError, RegistryError, OSError, ValueError):
        return []
    return [str(v) for v in versions if str(v).startswith(prefix)]


def _completed(action: argparse.Action, completer: Callable[..., list[str]]) -> argparse.Action:
    action.completer = completer  # type: ignore[attr-defined]  # argcomplete's protocol
    return action


def cmd_completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    print(shellcode(["sds"], shell=args.shell), end="")  # type: ignore[no-untyped-call]
    return 0


def build_parser() -> argparse.ArgumentParser:
    from training.params import add_training_arguments

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument(
        "--project-dir", help="the directory holding cdk.json (default: search upward)"
    )
    common.add_argument(
        "--aws",
        action="store_true",
        default=argparse.SUPPRESS,
        help="work against the deployed stacks, found through SSM /sds/<env>/ (or SDS_TARGET=aws)",
    )

    parser = argparse.ArgumentParser(
        prog="sds",
        description="Serverless data science on AWS: train, register, promote, roll back and serve models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sds {__version__}")
    parser.add_argument(
        "--aws",
        action="store_true",
        default=False,
        help="work against the deployed stacks, found through SSM /sds/<env>/ (or SDS_TARGET=aws)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_text: str,
        examples: Sequence[str],
        *,
        options: bool = True,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[common] if options else [],
            help=help_text,
            description=textwrap.fill(help_text, 88),
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    def env_option(p: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
        _completed(p.add_argument(*flags, **kwargs), _complete_env)

    p = command(
        "generate",
        cmd_generate,
        "write synthetic card-payment events (JSON Lines)",
        [
            "sds generate --events 100000 --out data/events.jsonl.gz",
            "sds generate --events 1000 --seed 3 --out data/small.jsonl --json",
        ],
    )
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True, help="output path (.jsonl or .jsonl.gz)")

    p = command(
        "train",
        cmd_train,
        "train a model and register it in an environment's registry",
        [
            'sds train --data data/events.jsonl.gz --reason "weekly retrain"',
            "sds train --data data/events.jsonl.gz --max-iter 200 --learning-rate 0.05 --json",
            'sds --aws train --env dev --data s3://my-bucket/events/ --reason "weekly retrain"',
            'sds --aws train --env dev --on-fargate --reason "weekly retrain"',
        ],
    )
    env_option(p, "--env", help="registry to register in (default: the first environment)")
    p.add_argument("--data", help="history: .jsonl[.gz] file, directory or s3://bucket/prefix")
    p.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--on-fargate",
        action="store_true",
        help="run the environment's training task on ECS Fargate (implies --aws), wait, and "
        "report the registered version; --data then overrides the task's data location",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="train on this machine and register into the environment's registry (default)",
    )
    add_training_arguments(p)

    p = command(
        "models",
        cmd_models,
        "list versions, their metrics and where each is live",
        ["sds models", "sds models --env staging --json", "sds --aws models --env prod"],
    )
    env_option(p, "--env")

    p = command(
        "show",
        cmd_show,
        "show one version's manifest (verifies its artifacts)",
        ["sds show 3", "sds show 3 --env staging --json"],
    )
    _completed(p.add_argument("version", type=int), _complete_version)
    env_option(p, "--env")

    p = command(
        "promote",
        cmd_promote,
        "make a version live in an environment (gates checked first)",
        [
            'sds promote 3 --to dev --reason "better PR AUC"',
            'sds promote --from dev --to staging --reason "passed dev checks"',
            'sds --aws promote --from staging --to prod --reason "release 2026-11"',
        ],
    )
    _completed(p.add_argument("version", type=int, nargs="?"), _complete_version)
    env_option(p, "--to", required=True, help="target environment")
    env_option(p, "--from", dest="from_env", help="promote what is live in this environment")
    p.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    p.add_argument("--quiet", action="store_true", help="no progress display for the copy")

    p = command(
        "rollback",
        cmd_rollback,
        "point an environment back at the previous (or a given) version",
        [
            'sds rollback --env dev --reason "false positives spiking"',
            'sds rollback --env dev --to 2 --reason "back to the last good model"',
            'sds --aws rollback --env prod --reason "alarm on false positives"',
        ],
    )
    env_option(p, "--env", required=True)
    _completed(
        p.add_argument(
            "--to", type=int, help="version to roll back to (default: the previous one)"
        ),
        _complete_version,
    )
    p.add_argument("--reason", default="", help="why (recorded in the audit trail)")

    p = command(
        "history",
        cmd_history,
        "the audit trail of an environment",
        ["sds history --env prod", "sds --aws history --env prod --json"],
    )
    env_option(p, "--env", required=True)

    p = command(
        "status",
        cmd_status,
        "what each environment serves: pin, registry alias and (with --aws) the Lambda alias "
        "and any deployment in progress; warns when they disagree",
        [
            "sds status",
            "sds status --env dev --json",
            "sds --aws status --env prod",
            "sds --aws status --check",
        ],
    )
    env_option(p, "--env", help="one environment, in detail (default: all, as a table)")
    p.add_argument(
        "--check", action="store_true", help="exit 1 when anything disagrees (for scripts and CI)"
    )

    p = command(
        "serve",
        cmd_serve,
        "run the inference API locally, following the environment's pin",
        ["sds serve --env dev", "sds serve --env staging --port 8081 --json"],
    )
    env_option(p, "--env")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)

    p = command(
        "demo",
        cmd_demo,
        "the whole local loop: data, train, promote, serve, roll back",
        ["sds demo", "sds demo --events 20000 --json"],
    )
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--keep", action="store_true", help="keep the demo workspace (.sds/demo)")

    command(
        "envs",
        cmd_envs,
        "list environments, their registries and pins",
        ["sds envs", "sds --aws envs --json"],
    )

    p = command(
        "completion",
        cmd_completion,
        "print the shell completion script (commands, options, environments, versions)",
        [
            'eval "$(sds completion bash)"     # add to ~/.bashrc',
            'eval "$(sds completion zsh)"      # add to ~/.zshrc',
            "sds completion fish > ~/.config/fish/completions/sds.fish",
        ],
        options=False,  # a shell script, not a result: no --json, no project needed
    )
    p.add_argument("shell", choices=["bash", "zsh", "fish", "tcsh", "powershell"])
    return parser


def _error_json(exc: BaseException, code: int) -> dict[str, Any]:
    return {"error": {"message": str(exc), "type": type(exc).__name__, "exit_code": code}}


def main(argv: Sequence[str] | None = None) -> int:
    from sds.ops.promotion import GateFailure, OperationError

    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer, then exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    as_json = getattr(args, "json", False)

    def fail(exc: BaseException, code: int, prefix: str = "error") -> int:
        if as_json:
            _print_json(_error_json(exc, code))
        print(f"sds: {prefix}: {exc}", file=sys.stderr)
        return code

    try:
        return int(args.func(args))
    except GateFailure as exc:
        if as_json:
            _print_json(
                {
                    "refused": True,
                    "env": exc.env,
                    "version": exc.version,
                    "gates": [g.to_dict() for g in exc.results],
                    **_error_json(exc, EXIT_REFUSED),
                }
            )
        print(f"sds: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except CliError as exc:
        return fail(exc, exc.code)
    except (
        OperationError,
        RegistryError,
        ConfigError,
        LockFileError,
        AwsError,
        ValueError,
        OSError,
    ) as exc:
        refused = type(exc).__name__ in ("ConcurrentUpdate", "ConcurrentRollback")
        return fail(exc, EXIT_REFUSED if refused else EXIT_ERROR)
    except Exception as exc:
        if not type(exc).__module__.startswith(("botocore", "boto3")):
            raise
        # Credentials, endpoints, permissions: the SDK's message is the useful part.
        return fail(exc, EXIT_ERROR, "error: AWS")
    except KeyboardInterrupt:
        print("sds: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
