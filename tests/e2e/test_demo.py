"""`make demo` runs `sds demo`: it must pass on its own, prove the served version changes, and
close the loop: traffic captured, labels ingested, retraining from capture, must_beat_live
deciding."""

from __future__ import annotations

import re
import shlex

from sds.cli.main import build_parser
from tests.e2e.cli_project import Project
from training.capture_data import parse_moment


def test_demo_trains_promotes_serves_and_rolls_back(trained_project: Project) -> None:
    result = trained_project.sds("demo", "--events", "8000", timeout=300)
    out = result.stdout
    assert "X-Model-Version: 1" in out and "X-Model-Version: 2" in out
    assert out.index("X-Model-Version: 2") < out.rindex("X-Model-Version: 1")
    assert "refused: version 2 may not go to prod" in out
    # Each trained version's precision says over which share of its holdout it was measured
    flagged = re.findall(r"precision \d\.\d{3} at (\d+\.\d{2})% flagged \(target 1%\)", out)
    assert len(flagged) == 2, out
    assert "served after promote    v1 -> v2 -> v1" in out
    # The loop: every streamed payment captured, labels stored, two retrainings from capture,
    # and the one that does not beat the live model refused by must_beat_live
    assert "captured: 6000 records in demo/capture/dev/dt=" in out
    assert re.search(r"dev: \d+ labels stored \(\d+ fraud, \d+ legitimate\)", out)
    assert out.count("sds train --from-capture --env dev") == 2
    assert re.search(r"refused: version \d+ may not go to dev: must_beat_live: pr_auc", out)
    assert re.search(r"from capture +6000 payments captured, \d+ labels; v\d+ refused", out)
    # A challenger shadows the live model on new traffic (the live model alone answers), sds
    # compare reads both scores of every payment, and promote --shadow moves the pin (or the gate
    # refuses it, saying why)
    assert re.search(r"dev: v\d+ shadows v1: it scores every payment, v1 alone decides", out)
    assert "2000 more payments scored, every answer from v1" in out
    assert re.search(r"payments +2000 \(0 the shadow failed on\)", out)
    assert re.search(r"agreement +\d+\.\d+%", out)
    assert re.search(
        r"shadow pin removed: its version \d+ is live in dev now|"
        r"refused: version \d+ may not go to dev",
        out,
    )
    # The monitor's report of what was served, kept after the demo's clean-up
    report = trained_project.path / ".sds" / "reports" / "drift-dev.html"
    assert f"monitor report          {report}" in out
    assert re.search(r"v1: \d+ payments, alert rate \d+\.\d+% \(its holdout's: ", out)
    assert report.read_text().startswith("<!DOCTYPE html>")
    # Every command it prints runs as typed: the curl lines send JSON as JSON, and the monitor
    # line's window (the one the report was made of) is not empty
    curls = [line for line in out.splitlines() if line.startswith("$ curl -s -X POST")]
    assert curls and all("-H 'Content-Type: application/json'" in line for line in curls)
    (typed,) = [line for line in out.splitlines() if line.startswith("$ sds monitor ")]
    args = build_parser().parse_args(shlex.split(typed)[2:])
    assert parse_moment(args.since, what="--since") < parse_moment(args.until, what="--until")
    # The serve line names the port it started on (any free one, not the default 8080), and the
    # curl lines reach that server
    (served,) = [line for line in out.splitlines() if line.startswith("$ sds serve ")]
    serve_args = build_parser().parse_args(shlex.split(served.split("#")[0])[2:])
    assert served.endswith(f":{serve_args.port}"), served
    assert all(f":{serve_args.port}/" in line for line in curls)
    # The demo works in its own workspace: the project's lock file is untouched.
    assert not (trained_project.path / "models.lock.json").exists()
    assert not (trained_project.path / ".sds" / "demo").exists()
