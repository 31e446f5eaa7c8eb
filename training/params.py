"""Training parameters and their command-line flags, shared by `sds train` and the Fargate task.

Kept apart from `training.train` (numpy, scikit-learn, ONNX) so the `sds` CLI can build its
parser without importing any of them: a rollback should not pay for the training stack.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


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
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not 0 < self.learning_rate <= 1:
            raise ValueError("learning_rate must be in (0, 1]")
        if self.max_leaf_nodes < 2:
            raise ValueError("max_leaf_nodes must be >= 2")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise ValueError("holdout_fraction must be between 0.05 and 0.5")
        if not 0 < self.alert_rate < 0.5:
            raise ValueError("alert_rate must be between 0 and 0.5")
        if not 0.001 <= self.negative_rate <= 1:
            raise ValueError("negative_rate must be between 0.001 and 1 (1 keeps every payment)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainParams()
    group = parser.add_argument_group("model parameters")
    group.add_argument("--max-iter", type=int, default=defaults.max_iter)
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    group.add_argument("--max-leaf-nodes", type=int, default=defaults.max_leaf_nodes)
    group.add_argument("--max-depth", type=int, default=defaults.max_depth)
    group.add_argument("--min-samples-leaf", type=int, default=defaults.min_samples_leaf)
    group.add_argument("--l2-regularization", type=float, default=defaults.l2_regularization)
    group.add_argument("--holdout-fraction", type=float, default=defaults.holdout_fraction)
    group.add_argument(
        "--alert-rate",
        type=float,
        default=defaults.alert_rate,
        help="share of events flagged as fraud; sets the decision threshold (default 0.01)",
    )
    group.add_argument(
        "--negative-rate",
        type=float,
        default=defaults.negative_rate,
        help="share of legitimate payments to train on (every fraud is kept; the kept ones are "
        "weighted back, metrics too); below 1 to fit a large history faster (default 1)",
    )
    group.add_argument("--seed", type=int, default=defaults.seed)


def params_from_args(args: argparse.Namespace) -> TrainParams:
    return TrainParams(
        max_iter=args.max_iter,
        learning_rate=args.learning_rate,
        max_leaf_nodes=args.max_leaf_nodes,
        max_depth=args.max_depth,
        min_samples_leaf=args.min_samples_leaf,
        l2_regularization=args.l2_regularization,
        holdout_fraction=args.holdout_fraction,
        alert_rate=args.alert_rate,
        negative_rate=args.negative_rate,
        seed=args.seed,
    )
