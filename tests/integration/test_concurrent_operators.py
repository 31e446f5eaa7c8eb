"""Ten operators at once, as separate `sds --aws` processes: promoters and rollers on one environment.

No alias update may be lost, and the trail must explain every value the alias ever had: the
registry bucket is versioned (as deployed), so every alias document ever written is still there
to check against the audit events and the commands' own reports.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.deployed import ROOT, CliResult, Deployed, read_pin

ALIAS_KEY = "models/fraud/aliases/dev.json"
MOVES = ("promoted", "rolled_back")


def alias_documents(dev: Deployed) -> list[dict[str, Any]]:
    """Every version of dev's alias document ever written, oldest first."""
    s3 = dev.clients("s3")
    listing = s3.list_object_versions(Bucket=dev.bucket, Prefix=ALIAS_KEY)
    documents = [
        json.loads(
            s3.get_object(Bucket=dev.bucket, Key=ALIAS_KEY, VersionId=v["VersionId"])["Body"].read()
        )
        for v in listing.get("Versions", [])
        if v["Key"] == ALIAS_KEY
    ]
    # Each document is written by compare-and-swap on the one before it, after reading it, so
    # their creation times are strictly ordered.
    return sorted(documents, key=lambda d: str(d["updated_at"]))


def test_concurrent_promoters_and_rollers_lose_no_update_and_leave_a_complete_trail(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given models 1-4, each deployed as its own Lambda version, and dev serving 3 (history 1, 2)
    dev = deploy("dev")
    serving: dict[int, str] = {}
    for tag in ("one", "two", "three", "four"):
        model = dev.register(tag)
        serving[model.number] = dev.publish(model)
    for number in (1, 2, 3):
        assert cli("promote", str(number), "--to", "dev", "--reason", "setup").code == 0
    dev.point_live(serving[3])

    # When ten operators act at once: four promoters, four rollers to a version, two plain rollers
    commands = [
        ["promote", "4", "--to", "dev"],
        ["rollback", "--env", "dev", "--to", "1"],
        ["promote", "2", "--to", "dev"],
        ["rollback", "--env", "dev"],
        ["rollback", "--env", "dev", "--to", "2"],
        ["promote", "1", "--to", "dev"],
        ["rollback", "--env", "dev", "--to", "4"],
        ["promote", "4", "--to", "dev"],
        ["rollback", "--env", "dev"],
        ["rollback", "--env", "dev", "--to", "3"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sds", "--aws", *command, "--json", "--reason", f"op-{i}"],
            cwd=ROOT,
            env={**os.environ, "SDS_ACTOR": f"operator-{i}@ci"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, command in enumerate(commands)
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        outcomes.append((process.returncode, out, err))

    # Then each one did its move or found nothing to do, or refused cleanly: a concurrent change
    # (exit 3), a rollback to 4 before 4 was ever live (exit 3: rollback returns only to what
    # dev served), or a plain rollback that found the history already popped empty by the others
    reports: dict[str, dict[str, Any]] = {}
    for i, (code, out, err) in enumerate(outcomes):
        if code == 0:
            reports[f"op-{i}"] = json.loads(out)
        elif code == 3 and commands[i][-2:] == ["--to", "4"] and "was never live in dev" in err:
            continue  # it ran before any promotion of 4 landed: 4 had not served dev yet
        elif code == 3:
            assert "moved the registry alias" in err or "re-run" in err, err
        else:
            assert code == 1 and "nothing earlier to roll back to" in err, (
                f"op-{i} {commands[i]}: {err}"
            )
    assert len(reports) >= 6, f"too many refusals: {outcomes}"

    # And every alias value follows from the one before it: no update was lost
    documents = alias_documents(dev)
    for before, after in itertools.pairwise(documents):
        assert after["previous"] == before["version"], (before, after)

    # And each alias value has exactly one audit event, naming who, why and what it replaced
    events = {e["id"]: e for e in dev.registry.events(alias="dev") if e["type"] in MOVES}
    assert len(events) == len(documents)
    for document in documents:
        event = events[document["event_id"]]
        assert (event["version"], event["from_version"]) == (
            document["version"],
            document["previous"],
        )
        assert (event["by"], event["reason"]) == (document["updated_by"], document["reason"])

    # And each command that reported a change made exactly one audited change; the rest none.
    # (`live_switched`: a rollback to the version the registry alias already had, e.g. one a
    # promoter had just moved it to, switches only Lambda's `live`.)
    switched = [e for e in dev.registry.events(alias="dev") if e["type"] == "live_switched"]
    reasons = [e["reason"] for e in [*events.values(), *switched]]
    for i in range(len(commands)):
        reported = reports.get(f"op-{i}", {}).get("changed", False)
        assert reasons.count(f"op-{i}") == (1 if reported else 0), (i, reports.get(f"op-{i}"))

    # And the pin follows the registry alias, and Lambda's `live` the last rollback (rollbacks
    # hold a lease while they switch `live` and move the alias, so their events are in order)
    final = documents[-1]
    assert read_pin(project, "dev") == {"version": final["version"], "sha256": final["sha256"]}
    switches = sorted(
        [e for e in events.values() if e["type"] == "rolled_back"] + switched,
        key=lambda e: str(e["at"]),
    )
    for event in switches:
        assert event["lambda_to"] == serving[event["version"]]
    expected_live = switches[-1]["lambda_to"] if switches else serving[3]
    assert dev.live()["FunctionVersion"] == expected_live
