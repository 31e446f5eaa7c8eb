"""The commands `sds demo` prints are the ones it runs: typed as shown, each `sds train` line
trains the model the demo trained (the same parameters), so its figures can be reproduced."""

from __future__ import annotations

import shlex

import pytest

from sds.cli.main import build_parser
from sds.ops.demo import CAPTURE_MODELS, HISTORY_MODELS, parameter_flags
from training.params import TrainParams, params_from_args


@pytest.mark.parametrize(
    ("line", "models"),
    [
        ("sds train --data events.jsonl.gz {flags} --reason 'x'", HISTORY_MODELS),
        (
            "sds train --from-capture --env dev --since 2026-01-01 --until 2026-04-01 "
            "--as-of 2026-04-20 {flags} --reason 'x'",
            CAPTURE_MODELS,
        ),
    ],
)
def test_each_printed_train_command_gives_the_parameters_the_demo_trains_with(
    line: str, models: tuple[tuple[str, TrainParams], ...]
) -> None:
    for _label, params in models:
        typed = line.format(flags=parameter_flags(params))
        args = build_parser().parse_args(shlex.split(typed)[1:])
        assert params_from_args(args, from_capture=args.from_capture) == params, typed


def test_a_parameter_at_its_default_is_left_out() -> None:
    assert parameter_flags(TrainParams()) == ""
    assert parameter_flags(TrainParams(max_iter=8, learning_rate=0.1)) == "--max-iter 8"
