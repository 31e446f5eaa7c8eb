"""Progress display: plain lines for logs, a line redrawn in place on a terminal, or nothing.

Streams are io.StringIO with `live` set explicitly; nothing here depends on timing.
"""

from __future__ import annotations

import io
import re
import threading

import pytest

from sds.progress import (
    CLEAR_TO_END,
    Progress,
    human_bytes,
    human_bytes_of,
    is_live_terminal,
    truncate,
)

DURATION = r"\d+\.\d s"


def progress_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sds-progress"]


def drawn_lines(output: str) -> list[str]:
    """The lines a terminal would have shown in turn: each `\\r` starts a redraw."""
    return [part.replace(CLEAR_TO_END, "").rstrip("\n") for part in output.split("\r") if part]


# Plain mode --------------------------------------------------------------------------------------


def test_plain_mode_prints_a_start_line_and_a_done_line_per_step_and_no_control_characters() -> (
    None
):
    stream = io.StringIO()
    progress = Progress(2, stream=stream, live=False)

    assert progress.run("reading events", lambda: [1, 2, 3], lambda r: f"{len(r)} events") == [
        1,
        2,
        3,
    ]
    assert progress.run("fitting", lambda: "model") == "model"

    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/2] reading events ..."
    assert re.fullmatch(rf"      done in {DURATION}: 3 events", lines[1])
    assert lines[2] == "[2/2] fitting ..."
    assert re.fullmatch(rf"      done in {DURATION}", lines[3])
    assert len(lines) == 4
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", stream.getvalue())
    assert progress_threads() == []


def test_plain_mode_lets_the_exception_through_after_the_start_line() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=False)
    error = ValueError("bad data")

    def work() -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        progress.run("reading", work)

    assert raised.value is error
    assert stream.getvalue() == "[1/1] reading ...\n"


def test_disabled_progress_prints_nothing_but_still_runs_every_step() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream=stream, enabled=False, live=True)

    assert progress.run("a", lambda: 1, lambda r: str(r)) == 1
    with progress.transfer("uploading", 100) as advance:
        advance(100)
    with progress.uploading("uploading") as on_upload:
        on_upload("model.onnx", 10, 20)
        on_upload("manifest.json", 20, 20)

    assert stream.getvalue() == ""
    assert progress.step == 1
    assert progress_threads() == []


# Live mode ---------------------------------------------------------------------------------------


def test_live_mode_redraws_one_line_in_place_then_leaves_the_done_line() -> None:
    stream = io.StringIO()
    progress = Progress(7, stream=stream, live=True, width=80)
    progress.step = 2
    seen_during: list[threading.Thread] = []

    def work() -> int:
        seen_during.extend(progress_threads())
        return 120

    assert progress.run("fitting HistGradientBoosting", work, lambda n: f"{n} trees") == 120

    output = stream.getvalue()
    assert output.startswith("\r[3/7] ")
    assert CLEAR_TO_END in output
    assert output.endswith("\n") and output.count("\n") == 1  # one permanent line
    *redraws, final = drawn_lines(output)
    assert redraws, "the line is drawn at least once before the work ends"
    assert all(
        re.fullmatch(rf"\[3/7\] [█▒░]{{14}}  fitting HistGradientBoosting  {DURATION}", line)
        for line in redraws
    ), redraws
    assert re.fullmatch(
        rf"\[3/7\] fitting HistGradientBoosting \.\.\. done in {DURATION}: 120 trees", final
    )
    assert len(seen_during) == 1 and seen_during[0].daemon
    assert progress_threads() == []


def test_live_step_bar_shows_finished_steps_and_the_current_one() -> None:
    stream = io.StringIO()
    progress = Progress(7, stream=stream, live=True, width=80)
    progress.step = 2

    progress.run("x", lambda: None)

    bar = drawn_lines(stream.getvalue())[0].split()[1]
    assert bar == "████▒▒░░░░░░░░"


def test_live_mode_failure_replaces_the_line_stops_the_ticker_and_reraises_the_same_error() -> None:
    stream = io.StringIO()
    progress = Progress(3, stream=stream, live=True, width=80)
    error = RuntimeError("onnx export exploded")

    def work() -> None:
        raise error

    with pytest.raises(RuntimeError) as raised:
        progress.run("exporting to ONNX", work, lambda _: "never")

    assert raised.value is error
    final = drawn_lines(stream.getvalue())[-1]
    assert re.fullmatch(rf"\[1/3\] exporting to ONNX \.\.\. failed after {DURATION}", final)
    assert "done in" not in stream.getvalue()
    assert progress_threads() == []


def test_live_mode_stops_the_ticker_on_keyboard_interrupt() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=True, width=80)

    def work() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        progress.run("fitting", work)

    assert "interrupted after" in drawn_lines(stream.getvalue())[-1]
    assert progress_threads() == []


def test_live_lines_fit_the_width_by_shortening_the_label() -> None:
    stream = io.StringIO()
    progress = Progress(7, stream=stream, live=True, width=50)
    label = "fitting HistGradientBoosting on 48000 events before 2026-01-01T00:00:00Z"

    progress.run(label, lambda: None)

    *redraws, final = drawn_lines(stream.getvalue())
    for line in redraws:
        assert len(line) <= 50, line
        assert line.startswith("[1/7] ") and re.search(rf"…  {DURATION}$", line), line
    assert label in final  # the permanent line keeps the whole label


def test_live_transfer_on_its_own_draws_a_byte_bar_and_ends_with_the_total() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=True, width=80)

    with progress.transfer("uploading model.onnx", 4 * 1024 * 1024) as advance:
        advance(1024 * 1024)
        assert len(progress_threads()) == 1

    *redraws, final = drawn_lines(stream.getvalue())
    assert redraws[0] == "uploading model.onnx  ░░░░░░░░░░░░░░  0.0/4.0 MiB"
    assert re.fullmatch(rf"uploading model\.onnx: 1\.0 MiB in {DURATION}", final)
    assert stream.getvalue().count("\n") == 1
    assert progress_threads() == []


def test_live_upload_inside_a_step_draws_in_the_step_line_and_leaves_only_the_step_line() -> None:
    stream = io.StringIO()
    progress = Progress(7, stream=stream, live=True, width=80)
    progress.step = 6

    def register() -> str:
        with progress.uploading("uploading 3 objects") as on_upload:
            on_upload("model.onnx", 3 * 1024 * 1024, 4 * 1024 * 1024)
            assert len(progress_threads()) == 1  # the step's ticker, not a second one
            on_upload("model.skops", 4 * 1024 * 1024 - 100, 4 * 1024 * 1024)
            on_upload("manifest.json", 4 * 1024 * 1024, 4 * 1024 * 1024)
        return "v1"

    assert progress.run("registering in s3://bucket", register, lambda v: v) == "v1"

    output = stream.getvalue()
    assert output.count("\n") == 1
    assert re.fullmatch(
        rf"\[7/7\] registering in s3://bucket \.\.\. done in {DURATION}: v1",
        drawn_lines(output)[-1],
    )
    assert progress_threads() == []


# Transfers in plain mode -------------------------------------------------------------------------


def test_plain_transfer_prints_one_line_at_the_start_and_one_at_the_end_with_human_sizes() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=False)

    with progress.transfer("uploading model.onnx", 3 * 1024 * 1024 + 512 * 1024) as advance:
        for _ in range(7):
            advance(512 * 1024)

    lines = stream.getvalue().splitlines()
    assert lines[0] == "uploading model.onnx (3.5 MiB) ..."
    assert re.fullmatch(rf"uploading model\.onnx: 3\.5 MiB in {DURATION}", lines[1])
    assert len(lines) == 2


def test_plain_upload_inside_a_step_is_indented_between_the_step_lines() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=False)

    def register() -> int:
        with progress.uploading("uploading 2 objects") as on_upload:
            on_upload("model.onnx", 2000, 3000)
            on_upload("manifest.json", 3000, 3000)
        return 1

    progress.run("registering", register)

    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/1] registering ..."
    assert lines[1] == "      uploading 2 objects (2.9 KiB) ..."
    assert re.fullmatch(rf"      uploading 2 objects: 2\.9 KiB in {DURATION}", lines[2])
    assert re.fullmatch(rf"      done in {DURATION}", lines[3])
    assert len(lines) == 4


def test_a_failed_plain_upload_says_how_far_it_got_and_the_error_goes_through() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=False)

    with pytest.raises(OSError, match="network down"), progress.uploading("uploading") as on_upload:
        on_upload("model.onnx", 1000, 4000)
        raise OSError("network down")

    lines = stream.getvalue().splitlines()
    assert lines[0] == "uploading (3.9 KiB) ..."
    assert re.fullmatch(rf"uploading: failed after {DURATION} \(1\.0/3\.9 KiB\)", lines[1])


@pytest.mark.parametrize("live", [False, True])
def test_an_interrupted_transfer_says_interrupted_not_failed(live: bool) -> None:
    # Given a transfer under way (Ctrl-C while a batch run's workers read their input)
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=live, width=80)

    # When Ctrl-C lands
    with pytest.raises(KeyboardInterrupt), progress.transfer("read", 4000) as advance:
        advance(1000)
        raise KeyboardInterrupt

    # Then its last line says it was interrupted and how far it got: nothing failed
    final = drawn_lines(stream.getvalue())[-1] if live else stream.getvalue().splitlines()[-1]
    assert re.fullmatch(rf"read: interrupted after {DURATION} \(1\.0/3\.9 KiB\)", final)
    assert "failed" not in stream.getvalue()
    assert progress_threads() == []


def test_an_upload_that_stores_nothing_prints_nothing() -> None:
    stream = io.StringIO()
    progress = Progress(1, stream=stream, live=False)

    with progress.uploading("uploading"):
        pass  # e.g. the version was already complete in the target registry

    assert stream.getvalue() == ""


# Helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1.0 MiB"),  # rounds up into the next unit, never "1024.0 KiB"
        (int(3.4 * 1024 * 1024), "3.4 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (2048 * 1024**3, "2048.0 GiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_human_bytes_of_uses_the_unit_of_the_total() -> None:
    assert human_bytes_of(300, 900) == "300/900 B"
    assert human_bytes_of(1258291, 3565158) == "1.2/3.4 MiB"
    assert human_bytes_of(0, 2048) == "0.0/2.0 KiB"


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("much too long", 10, "much too …"),
        ("abc", 1, "a"),
        ("abc", 0, ""),
    ],
)
def test_truncate(text: str, width: int, expected: str) -> None:
    assert truncate(text, width) == expected


def test_live_is_only_chosen_for_a_terminal_that_is_not_dumb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    assert is_live_terminal(Tty()) and Progress(1, stream=Tty()).live
    assert not is_live_terminal(io.StringIO()) and not Progress(1, stream=io.StringIO()).live
    assert not Progress(1, stream=Tty(), enabled=False).live
    monkeypatch.setenv("TERM", "dumb")
    assert not is_live_terminal(Tty()) and not Progress(1, stream=Tty()).live


def test_a_stream_that_cannot_encode_block_characters_gets_ascii_bars() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    progress = Progress(2, stream=stream, live=True, width=80)

    progress.run("step", lambda: None)
    stream.flush()

    text = raw.getvalue().decode("ascii")
    assert "[1/2] =======-------  step" in text
