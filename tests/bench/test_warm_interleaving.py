"""The warm worker times the series it pairs block by block in turn (`time_interleaved`): block b
of the handler, of the raw run and of the store read are neighbours in time, so a slow spell of
the machine lands on both sides of a paired figure instead of on one series."""

from __future__ import annotations

from typing import Any

from benchmarks.warm_worker import WARMUP_CALLS, Series, time_interleaved


def test_series_are_timed_block_by_block_in_turn_after_their_warm_up() -> None:
    # Given two series that log each call (and a `before` step on the second)
    log: list[tuple[str, Any]] = []
    handler = Series(lambda x: log.append(("handler", x)), inputs=[0, 1, 2])
    floor = Series(
        lambda x: log.append(("floor", x)),
        inputs=["a", "b"],
        before=lambda x: log.append(("before", x)),
    )

    # When 12 calls of each are timed in 3 blocks
    results = time_interleaved({"handler": handler, "floor": floor}, calls=12, blocks=3)

    # Then each warms up first (a pass over its inputs, at least WARMUP_CALLS calls)...
    warm_up = 2 * WARMUP_CALLS + WARMUP_CALLS  # the floor's calls each follow a `before`
    timed = log[warm_up:]
    assert [name for name, _ in log[:WARMUP_CALLS]] == ["handler"] * WARMUP_CALLS
    # ...then block b of every series, in order, before block b + 1 of any
    order = [name for name, _ in timed if name != "before"]
    assert order == (["handler"] * 4 + ["floor"] * 4) * 3
    # and the inputs cycle across the blocks as in one run of 12 calls
    assert [x for name, x in timed if name == "handler"] == [i % 3 for i in range(12)]
    assert [x for name, x in timed if name == "floor"] == ["ab"[i % 2] for i in range(12)]
    assert [x for name, x in timed if name == "before"] == ["ab"[i % 2] for i in range(12)]
    # and every series has its 12 samples, summarized whole and per block of 4
    for name in ("handler", "floor"):
        assert results[name]["calls"] == 12
        assert [block["calls"] for block in results[name]["blocks"]] == [4, 4, 4]
        assert results[name]["p50_us"] >= 0
