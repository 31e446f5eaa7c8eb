"""Training parameters and their command-line flags, shared by `sds train` and the Fargate task.

Kept apart from `training.train` (numpy, scikit-learn, ONNX) so the `sds` CLI can build its
parser without importing any of them: a rollback should not pay for the training stack.

Each parameter's valid values are written once, in `BOUNDS`: `TrainParams` checks them when it
is made, and each flag's argparse type (`Bounds.parse`) checks them as the command line is
parsed, so an out-of-range flag is a usage error naming it before any data is read, not
scikit-learn's complaint after the history was partitioned. The ranges are scikit-learn's
(`HistGradientBoostingClassifier._parameter_constraints`) and numpy's (a `random_state` seeds
`RandomState`: 0 to 2**32 - 1), narrowed where a wider value makes no sense here (a learning rate
above 1, a holdout of more than half the history).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import Any

from sds.kernel.errors import UsageError


@dataclass(frozen=True)
class Bounds:
    """The values a parameter takes: whole numbers (`kind` int) or finite numbers (float)
    from `low` (excluded when `low_open`) up to `high` (excluded when `high_open`; None: no
    upper bound)."""

    kind: type[int] | type[float]
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: object) -> bool:
        # numpy's integers and floats count as numbers; True and False do not.
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int else Real):
            return False
        # Whole numbers compared as such (a float cannot hold 10**400); others must be finite.
        number: int | float = int(value) if isinstance(value, Integral) else float(value)
        if isinstance(number, float) and not math.isfinite(number):
            return False
        if number <= self.low if self.low_open else number < self.low:
            return False
        if self.high is None:
            return True
        return number < self.high if self.high_open else number <= self.high

    def __str__(self) -> str:
        what = "a whole number" if self.kind is int else "a number"
        low, high = _number(self.low), None if self.high is None else _number(self.high)
        if high is None:
            return f"{what} above {low}" if self.low_open else f"{what}, {low} or more"
        if not self.low_open and not self.high_open:
            return f"{what} from {low} to {high}"
        start = f"above {low}" if self.low_open else f"from {low}"
        end = f"below {high}" if self.high_open else f"up to {high}"
        return f"{what} {start} and {end}"

    def parse(self, text: str) -> int | float:
        """An argparse type: the value `text` spells, if allowed (else ArgumentTypeError, which
        argparse reports naming the option: `argument --max-depth: '0': must be ...`)."""
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if not self.allows(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {self}")
        assert value is not None
        return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# A seed for numpy's RandomState (scikit-learn's random_state) and default_rng: 0 to 2**32 - 1.
SEED = Bounds(int, 0, 2**32 - 1)
# How a run reads its data, not parameters of the model (so not in the manifest's params):
# processes reading a history's partitions, and whole days of served traffic held out.
WORKERS = Bounds(int, 1)
HOLDOUT_DAYS = Bounds(int, 1)
WINDOW_DAYS = Bounds(int, 1)
MATURITY_DAYS = Bounds(int, 0)

BOUNDS: dict[str, Bounds] = {
    "max_iter": Bounds(int, 1),
    "learning_rate": Bounds(float, 0, 1, low_open=True),
    "max_leaf_nodes": Bounds(int, 2),
    "max_depth": Bounds(int, 1),  # or None: no limit (the default)
    "min_samples_leaf": Bounds(int, 1),
    "l2_regularization": Bounds(float, 0),
    "holdout_fraction": Bounds(float, 0.05, 0.5),
    "alert_rate": Bounds(float, 0, 0.5, low_open=True, high_open=True),
    "negative_rate": Bounds(float, 0.001, 1),
    "seed": SEED,
}


@dataclass(frozen=True)
class TrainParams:
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    max_depth: int | None = None
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    holdout_fraction: float = 0.2
    alert_rate: float = 0.01
    # Share of legitimate payments kept (every fraud is kept); the kept ones weigh 1/rate in the
    # fit and in the holdout metrics, so the model and its figures describe the whole history.
    negative_rate: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "max_depth" and value is None:
                continue
            bounds = BOUNDS[field.name]
            if not bounds.allows(value):
                raise ValueError(f"{field.name} must be {bounds}, got {value!r}")


HELP = {
    "max_iter": "boosting iterations (trees)",
    "learning_rate": "shrinkage of each tree's contribution",
    "max_leaf_nodes": "most leaves a tree has",
    "max_depth": "deepest a tree grows",
    "min_samples_leaf": "fewest payments in a leaf",
    "l2_regularization": "L2 penalty on leaf values",
    "holdout_fraction": "share of the most recent payments held out for evaluation",
    "alert_rate": "share of events flagged as fraud; sets the decision threshold",
    "negative_rate": "share of legitimate payments to train on (every fraud is kept; the kept "
    "ones are weighted back, metrics too); below 1 to fit a large history faster, 1 keeps "
    "every payment",
    "seed": "seed of the sample and of the fit",
}


# What only training on a history uses: training from capture holds out whole days
# (--holdout-days) and keeps every captured payment, weighed by its capture rate.
HISTORY_ONLY = ("holdout_fraction", "negative_rate")


def recorded_params(params: TrainParams, *, from_capture: bool = False) -> dict[str, Any]:
    """The manifest's `params`: what shaped the model. From capture, those only a history's
    training uses are left out (their defaults, recorded, would say they applied)."""
    unused = HISTORY_ONLY if from_capture else ()
    return {name: value for name, value in asdict(params).items() if name not in unused}


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per parameter (`--max-iter` for max_iter), its range checked as it is parsed.

    A flag not given is None in the parsed arguments (`given_parameters` tells them apart), and
    `params_from_args` gives it its default: what a command passes on to another process (the
    Fargate task's command line) is what its own command line said, no more."""
    defaults = TrainParams()
    group = parser.add_argument_group("model parameters")
    for field in fields(TrainParams):
        bounds = BOUNDS[field.name]
        default = getattr(defaults, field.name)
        said = f"; default {'no limit' if default is None else default}"
        group.add_argument(
            flag(field.name),
            type=bounds.parse,
            default=None,
            help=f"{HELP[field.name]} ({bounds}{said})",
        )


def flag(name: str) -> str:
    """The command-line flag of a parameter: `--max-iter` for max_iter."""
    return f"--{name.replace('_', '-')}"


def given_parameters(args: argparse.Namespace) -> dict[str, int | float]:
    """The model parameters the command line gave, by name."""
    given: dict[str, int | float] = {}
    for field in fields(TrainParams):
        value = getattr(args, field.name)
        if value is not None:
            given[field.name] = value
    return given


def parameter_arguments(given: Mapping[str, int | float]) -> list[str]:
    """`given` as the flags that give them, one word each (`--max-iter=300`), for the command
    line of another process running `add_training_arguments`' parser."""
    return [f"{flag(name)}={value}" for name, value in given.items()]


def params_from_args(args: argparse.Namespace, *, from_capture: bool = False) -> TrainParams:
    """The parameters the command line gave, the others at their defaults. `from_capture`
    refuses those only a history's training uses: recorded in the manifest, they would say a
    version was trained in a way it was not."""
    given = given_parameters(args)
    unused = [flag(name) for name in HISTORY_ONLY if name in given] if from_capture else []
    if unused:
        raise UsageError(
            f"{', '.join(unused)}: only when training on a history; training from capture holds "
            "out whole days (--holdout-days) and weighs each payment by its capture rate"
        )
    values: dict[str, Any] = dict(given)  # each checked by its flag's type, then by TrainParams
    return TrainParams(**values)
