"""What a reviewer sees: `cdk diff` of a promotion names the model version it deploys, and the
alarms on its alert rate that replace the previous version's."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sds.kernel.lock import LockFile, Pin
from tests.infra.synth import (
    CDK_CLI,
    DEV_PIN,
    PROD_PIN,
    ROOT,
    CliSynth,
    SynthesizedApp,
    cli_environment,
)


def test_cdk_diff_of_a_promotion_shows_model_version_and_a_new_retained_lambda_version(
    synthesized: SynthesizedApp, cli_synth: CliSynth, tmp_path: Path
) -> None:
    cli_synth.wait()  # one CLI at a time on a 2-core machine
    # Given prod deployed with the session's pin (v7) and a proposed lock promoting v8
    deployed = next(synthesized.outdir.glob("assembly-prod/prodInference*.template.json"))
    promoted = Pin(version=PROD_PIN.version + 1, sha256="c" * 64, expected_alert_rate=0.012)
    proposed = tmp_path / "proposed.lock.json"
    proposed.write_text(LockFile(model="fraud", pins={"dev": DEV_PIN, "prod": promoted}).to_json())
    # When a reviewer runs the real CLI's diff (no AWS credentials: against the template)
    output = _cli_diff(deployed, proposed, tmp_path)
    # Then the function's MODEL_VERSION goes 7 -> 8 (and its sha256 with it)
    lines = [line.strip(" │├└─") for line in output.splitlines()]
    version_at = lines.index("[~] .MODEL_VERSION:")
    assert lines[version_at + 1 : version_at + 3] == [
        f"[-] {PROD_PIN.version}",
        f"[+] {promoted.version}",
    ]
    assert "[~] .MODEL_SHA256:" in lines
    # And a new Lambda version is published while the old one is kept for rollback (orphaned,
    # not deleted), and alias live moves to the new one
    assert any(line.startswith("[+] AWS::Lambda::Version") for line in lines)
    assert any(
        line.startswith("[-] AWS::Lambda::Version") and line.endswith("orphan") for line in lines
    )
    assert any(line.startswith("[~] AWS::Lambda::Alias") for line in lines)
    # And the alert-rate alarms of v7 are replaced by v8's (so none starts in v7's state), the
    # deployment group and the dashboard following them
    changed = [
        line
        for line in lines
        if line.startswith(("[+] AWS::", "[-] AWS::", "[~] AWS::")) and "AWS::CDK::" not in line
    ]
    alarms = sorted(line.split()[2] for line in changed if "AWS::CloudWatch::Alarm" in line)
    assert alarms == sorted(
        f"Inference/ModelBehaviourV{pin.version}/AlertRate{kind}"
        for pin in (PROD_PIN, promoted)
        for kind in ("High", "Low")
    ), changed
    assert [line[:3] for line in changed if "AWS::CloudWatch::Alarm" in line].count("[+]") == 2
    assert any(line.startswith("[~] AWS::CodeDeploy::DeploymentGroup") for line in changed)
    assert any(line.startswith("[~] AWS::CloudWatch::Dashboard") for line in changed)
    # And nothing else changes
    assert len(changed) == 4 + 4 + 2, changed
    # And the output the docs show a reviewer lists exactly these changes (v7 -> v8, as here)
    for doc in DOCUMENTED_DIFFS:
        assert _resource_changes(doc.read_text()) == _resource_changes(output), doc.name


def test_cdk_diff_of_a_shadow_pin_shows_shadow_model_version_appear(
    synthesized: SynthesizedApp, cli_synth: CliSynth, tmp_path: Path
) -> None:
    cli_synth.wait()
    # Given prod deployed with the session's pin and a proposed lock adding a shadow beside it
    deployed = next(synthesized.outdir.glob("assembly-prod/prodInference*.template.json"))
    challenger = Pin(version=PROD_PIN.version + 1, sha256="d" * 64)
    proposed = tmp_path / "proposed.lock.json"
    lock = LockFile(
        model="fraud", pins={"dev": DEV_PIN, "prod": PROD_PIN}, shadows={"prod": challenger}
    )
    proposed.write_text(lock.to_json())
    # When a reviewer runs the real CLI's diff
    output = _cli_diff(deployed, proposed, tmp_path)
    lines = [line.strip(" │├└─") for line in output.splitlines()]
    # Then SHADOW_MODEL_VERSION (and its sha256) appear, and the live MODEL_VERSION does not move
    assert "[+] Added: .SHADOW_MODEL_VERSION" in lines, output[-4000:]
    assert "[+] Added: .SHADOW_MODEL_SHA256" in lines
    assert "[~] .MODEL_VERSION:" not in lines
    # And the function publishes a new version (it loads the challenger at its cold start)
    assert any(line.startswith("[+] AWS::Lambda::Version") for line in lines)


DOCUMENTED_DIFFS = (ROOT / "docs" / "infrastructure.md", ROOT / "docs" / "runbook.md")


def _resource_changes(text: str) -> set[tuple[str, str, str]]:
    """The (change, resource type, construct path) of each resource line of a `cdk diff` of
    prod/Inference: in a document, the lines of its code block that shows that diff."""
    if "```" in text:
        text = text.split("```\nStack prod/Inference (prod-Inference)\n", 1)[1].split("```", 1)[0]
    changes = {
        (words[0], words[1], words[2])
        for words in (line.split() for line in text.splitlines())
        if len(words) >= 3 and words[0] in ("[+]", "[-]", "[~]") and words[1].startswith("AWS::")
    }
    return {change for change in changes if not change[1].startswith("AWS::CDK::")}


def _cli_diff(deployed: Path, proposed: Path, work: Path) -> str:
    """The real CLI's `cdk diff` of prod/Inference with the `proposed` lock file against the
    `deployed` template (no AWS credentials); its whole output, after checking it succeeded."""
    result = subprocess.run(
        [
            str(CDK_CLI),
            "diff",
            "prod/Inference",
            "--exclusively",
            "--template",
            str(deployed),
            "--context",
            f"sds:lock_file={proposed}",
            "--output",
            str(work / "cdk.out"),
        ],
        cwd=ROOT,
        env=cli_environment(work / "cdk-home"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output
