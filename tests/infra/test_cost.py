"""The README's idle-cost table is what docs/cost.py computes from today's templates.

The session's synthesized app (every cdk.json environment, already built for the other infra
tests) goes through the same estimate `make cost` prints; a change to a stack or to cdk.json
that moves an environment's idle cost fails here until `make cost` rewrites the table.
"""

from __future__ import annotations

from pathlib import Path

from tests.infra.infra_helpers import cost_script as _cost
from tests.infra.synth import ROOT, SynthesizedApp, cdk_context


def test_the_readme_idle_cost_table_is_what_the_templates_give(synthesized: SynthesizedApp) -> None:
    # Given the environments of cdk.json (the session app also synthesizes a variant)
    cost = _cost()
    names = list(cdk_context()["environments"])
    accounts = {name: synthesized.project.env(name).infra.account for name in names}
    # When their templates are estimated
    estimates = cost.estimate(synthesized.templates(), accounts)
    # Then the README holds exactly that table (run `make cost` after changing a stack)
    readme = (ROOT / "README.md").read_text()
    assert cost.current_block(readme) == cost.readme_table(estimates)
    # And the target of issue 13 holds: staging and prod, isolated, under 25 USD, because their
    # interface endpoints are leased per training run (priced per hour of a run, not idle)
    by_env = {e.env: e for e in estimates}
    for env in ("staging", "prod"):
        assert by_env[env].total < 25
        assert synthesized.project.env(env).infra.network.isolated  # no internet route, no NAT
        assert by_env[env].row("endpoints") == (
            0.0,
            ["leased per training run: 3 x 1 AZ, 0.03 USD per hour of a run"],
        )
    assert not [w for e in estimates for w in e.warnings]  # every SnapStart function is pruned


def test_make_cost_check_fails_on_a_stale_readme(tmp_path: Path) -> None:
    # Given a README whose table says something else
    cost = _cost()
    stale = f"intro\n{cost.BEGIN}\n| old | table |\n{cost.END}\noutro\n"
    fresh = cost.readme_table([cost.Estimate("dev", (cost.Line("kms", "Key1", 1.0),))])
    # Then the block is found, replaced, and nothing around it changes
    assert cost.current_block(stale) != fresh
    replaced = cost.replace_block(stale, fresh)
    assert replaced.startswith("intro\n") and replaced.endswith("\noutro\n")
    assert cost.current_block(replaced) == fresh
    assert "| KMS customer managed keys | 1.00 (1) |" in fresh


def test_a_web_acl_counts_with_each_of_its_rules(synthesized: SynthesizedApp) -> None:
    # Given the environments of cdk.json: prod has the API's web ACL (infra.api.waf), with its
    # one rate-based rule; dev and staging have none
    cost = _cost()
    names = list(cdk_context()["environments"])
    estimates = {e.env: e for e in cost.estimate(synthesized.templates(), dict.fromkeys(names))}
    # Then prod pays 5.00 for the ACL and 1.00 for the rule, a month, and the others nothing
    usd, details = estimates["prod"].row("waf")
    assert usd == 6.0
    assert [d.split(": ", 1)[-1] for d in details] == ["1 web ACL", "1 rule"]
    assert [estimates[env].row("waf")[0] for env in ("dev", "staging")] == [0.0, 0.0]
