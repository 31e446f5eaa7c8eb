"""The `sds` commands, one module each: its arguments (`register`), its `run` and its output.

`COMMANDS` is the order `sds --help` lists them in.
"""

from __future__ import annotations

from sds.cli.commands import (
    backfill,
    compare,
    completion,
    demo,
    envs,
    generate,
    history,
    ingest,
    label,
    models,
    monitor,
    promote,
    prune,
    replay,
    rollback,
    score,
    serve,
    shadow,
    show,
    status,
    train,
)

COMMANDS = (
    generate,
    train,
    ingest,
    replay,
    score,
    backfill,
    label,
    models,
    show,
    promote,
    shadow,
    compare,
    rollback,
    history,
    status,
    monitor,
    prune,
    serve,
    demo,
    envs,
    completion,
)
