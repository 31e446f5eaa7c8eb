"""Batch runs over an activity history, partitioned by account: scoring, feature backfill and
the shuffle training reads through (`shuffle`, `jobs`, `run`; inputs and outputs: `storage`)."""
