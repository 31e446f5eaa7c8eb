"""models.lock.json: which model version (and its sha256) each environment serves.

`promote` and `rollback` write it; the CDK app reads it and puts the pin into the Lambda's
environment, so `cdk diff` shows `MODEL_VERSION 12 -> 13`. A pin also carries the alert rate its
version's manifest expects (`sds.kernel.behaviour.expected_alert_rate`), which the deployment's
alert-rate alarms are built around: the CDK app reads no registry at synth time. Writes are atomic (temp file + rename)
and serialized with an advisory lock, so two operators promoting different environments at once
never lose each other's pin.

An environment may also pin a shadow (`sds shadow`): a challenger the function loads beside the
live model, which scores the same payments, is captured, and decides nothing. It sits in the
environment's entry, so `cdk diff` shows `SHADOW_MODEL_VERSION` appear and a review sees both
models an environment runs:

    "prod": {"version": 12, "sha256": "...", "shadow": {"version": 13, "sha256": "..."}}

A reader that predates shadows ignores the key. A shadow needs a live model beside it: when the
live pin is removed, so is the shadow, and when the shadow's version becomes live (`sds promote`),
the shadow pin is removed in the same write, so the pin moves from shadow to live in one change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sds.kernel.behaviour import is_alert_rate
from sds.kernel.errors import SdsError
from sds.kernel.files import sync_folder

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class LockFileError(SdsError, ValueError):
    """models.lock.json is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Pin:
    """Which model an environment serves (version and sha256: a pin's identity), and what that
    version is expected to flag (None: unknown, as in pins written before sds recorded it)."""

    version: int
    sha256: str
    # Not part of the identity: the same model, read from a Lambda's environment (which does not
    # carry it), is the same pin.
    expected_alert_rate: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise LockFileError(f"pin version must be a positive integer, got {self.version!r}")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise LockFileError(f"pin sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.expected_alert_rate is not None and not is_alert_rate(self.expected_alert_rate):
            raise LockFileError(
                "pin expected_alert_rate must be a number in (0, 1], got "
                f"{self.expected_alert_rate!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"version": self.version, "sha256": self.sha256}
        if self.expected_alert_rate is not None:
            document["expected_alert_rate"] = self.expected_alert_rate
        return document


SHADOW = "shadow"


@dataclass(frozen=True)
class LockFile:
    model: str
    pins: dict[str, Pin]
    # The challengers, by environment: each beside a live pin of the same environment.
    shadows: dict[str, Pin] = field(default_factory=dict)

    def to_json(self) -> str:
        environments: dict[str, Any] = {}
        for env in sorted(self.pins):
            entry = self.pins[env].to_dict()
            if env in self.shadows:
                entry[SHADOW] = self.shadows[env].to_dict()
            environments[env] = entry
        document = {"model": self.model, "environments": environments}
        return json.dumps(document, indent=2) + "\n"


# What git leaves in a file it could not merge: `<<<<<<< ours`, `=======`, `>>>>>>> theirs`.
_CONFLICT_MARKER = re.compile(r"^(?:<{7}|={7}|>{7})(?: |$)", re.MULTILINE)


def parse_lock(text: str, *, where: str = "models.lock.json") -> LockFile:
    marker = _CONFLICT_MARKER.search(text)
    if marker is not None:
        line = text.count("\n", 0, marker.start()) + 1
        raise LockFileError(
            f"{where}: unresolved merge conflict (conflict markers from line {line}): resolve "
            "the merge conflict, keeping one pin per environment (sds status then shows "
            "whether each pin matches its registry alias)"
        )
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockFileError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("environments", {}), dict):
        raise LockFileError(f"{where}: expected {{'model': ..., 'environments': {{...}}}}")
    pins: dict[str, Pin] = {}
    shadows: dict[str, Pin] = {}
    for env, raw in document.get("environments", {}).items():
        if not isinstance(raw, dict):
            raise LockFileError(f"{where}: environments.{env}: expected an object")
        try:
            pins[env] = Pin(
                version=raw.get("version"),  # type: ignore[arg-type]
                sha256=raw.get("sha256"),  # type: ignore[arg-type]
                expected_alert_rate=raw.get("expected_alert_rate"),
            )
        except LockFileError as exc:
            raise LockFileError(f"{where}: environments.{env}: {exc}") from None
        shadow = raw.get(SHADOW)
        if shadow is None:
            continue
        if not isinstance(shadow, dict):
            raise LockFileError(f"{where}: environments.{env}.{SHADOW}: expected an object")
        try:
            shadows[env] = Pin(version=shadow.get("version"), sha256=shadow.get("sha256"))  # type: ignore[arg-type]
        except LockFileError as exc:
            raise LockFileError(f"{where}: environments.{env}.{SHADOW}: {exc}") from None
    return LockFile(model=str(document.get("model", "")), pins=pins, shadows=shadows)


def read_lock(path: Path, *, model: str) -> LockFile:
    """Read the lock file; a missing file means no environment has a pin yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return LockFile(model=model, pins={})
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LockFileError(f"{path}: cannot be read ({reason})") from None
    lock = parse_lock(text, where=str(path))
    if lock.model and lock.model != model:
        raise LockFileError(
            f"{path}: pins model {lock.model!r}, but the project's model is {model!r}"
        )
    return LockFile(model=model, pins=lock.pins, shadows=lock.shadows)


def read_pin(path: Path, *, model: str, env: str) -> Pin | None:
    return read_lock(path, model=model).pins.get(env)


def read_shadow(path: Path, *, model: str, env: str) -> Pin | None:
    """The challenger `env` runs beside its live model, if any."""
    return read_lock(path, model=model).shadows.get(env)


def check_writable(path: Path, *, model: str) -> LockFile:
    """The lock file as it is, after making sure a pin can be written to it: it parses (no merge
    conflict, no malformed entry) and its folder takes a new file (the write is a rename of one).

    Commands that move a registry alias call it before anything moves, so a lock file that
    cannot take the pin refuses the command with nothing changed, instead of failing after the
    alias moved.
    """
    lock = read_lock(path, model=model)
    import tempfile  # as in atomic_write_text: not on the inference function's cold start

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a"):
            pass
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LockFileError(f"{path}: cannot be written ({reason}: {path.parent})") from None
    return lock


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) so readers see the old or the new file, never a torn
    one, and the new one is on disk before it takes the name: a power cut after the rename
    leaves the new content, not an empty file, and its folder is synced so the name survives
    too (`sync_folder`). The temporary file is hidden (a leading dot), which every reader of a
    folder skips."""
    # Imported here: the inference function imports this module for `Pin` at every cold start
    # and never writes a file; tempfile (with shutil and random) is 5 ms of that start.
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    sync_folder(path.parent)


def write_pin(path: Path, *, model: str, env: str, pin: Pin | None) -> Pin | None:
    """Set (or, with None, clear) one environment's pin, keeping every other pin as it is."""
    return sync_pin(path, model=model, env=env, current=lambda: pin).pin


@dataclass(frozen=True)
class PinSync:
    """What `sync_pin` did to one environment's entries: the pin it wrote (`pin`), the one it
    replaced (`was`), and the shadow pin it removed with it (`shadow_removed`), if any."""

    pin: Pin | None
    was: Pin | None
    shadow_removed: Pin | None = None


def sync_pin(path: Path, *, model: str, env: str, current: Callable[[], Pin | None]) -> PinSync:
    """Write the pin from `current()` evaluated while holding the lock file's lock.

    Callers pass a function that reads the environment's registry alias. Because every
    alias mover calls this after its own move, the last pin written always reflects the last
    alias move, whatever order concurrent promotions and rollbacks interleave in.
    """
    with _exclusive(path):
        pin = current()
        lock = read_lock(path, model=model)
        pins = dict(lock.pins)
        shadows = dict(lock.shadows)
        removed: Pin | None = None
        if pin is None:
            pins.pop(env, None)
            removed = shadows.pop(env, None)  # a shadow scores beside a live model, never alone
        else:
            pins[env] = pin
            if shadows.get(env) == pin:
                removed = shadows.pop(env)  # the challenger is live now: from shadow to live
        # Compared as written: a pin's expected alert rate is not part of its identity, but a
        # pin that gains one (a promotion re-run on a lock from before it) is rewritten.
        if (
            _documents(pins) != _documents(lock.pins)
            or shadows != lock.shadows
            or not path.exists()
        ):
            atomic_write_text(path, LockFile(model=model, pins=pins, shadows=shadows).to_json())
        return PinSync(pin=pin, was=lock.pins.get(env), shadow_removed=removed)


def _documents(pins: dict[str, Pin]) -> dict[str, dict[str, Any]]:
    return {env: pin.to_dict() for env, pin in pins.items()}


def write_shadow(
    path: Path, *, model: str, env: str, shadow: Pin | None, live: Pin | None = None
) -> LockFile:
    """Set (or, with None, clear) `env`'s shadow pin, keeping every other pin as it is.

    Refused (LockFileError) when `env` has no live pin, when the shadow is what is live, or when
    `live` is given and is no longer `env`'s live pin (a promotion or rollback won a race).
    """
    with _exclusive(path):
        lock = read_lock(path, model=model)
        current = lock.pins.get(env)
        shadows = dict(lock.shadows)
        if shadow is None:
            shadows.pop(env, None)
        else:
            if current is None:
                raise LockFileError(
                    f"{path}: {env} has no live pin: a shadow scores beside a live model"
                )
            if live is not None and current != live:
                raise LockFileError(
                    f"{path}: {env}'s live pin changed to version {current.version} while the "
                    "shadow was being set; run the command again"
                )
            if current == shadow:
                raise LockFileError(
                    f"{path}: version {shadow.version} is live in {env}: it cannot shadow itself"
                )
            shadows[env] = shadow
        updated = LockFile(model=model, pins=dict(lock.pins), shadows=shadows)
        if shadows != lock.shadows or not path.exists():
            atomic_write_text(path, updated.to_json())
        return updated
