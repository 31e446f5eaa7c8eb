"""Two batch runs started into one output location at the same moment, made deterministic.

Both read the location before either writes its plan: `rival_first` makes the other run (`rival`)
start and write its plan whole just as the first run is about to write its own through `storage`,
after it found none. Whatever the first run does next is what the slower of two simultaneous runs
does. The storage stays what it was (the batch function checks it is an `S3Storage`); only its
writes are hooked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sds.kernel.batch.run import PLAN
from sds.kernel.batch.storage import Storage


@dataclass
class Rival:
    ran: bool = False
    began: Any = None  # what `rival` returned


def rival_first(storage: Storage, rival: Callable[[], Any]) -> Rival:
    """Run `rival` once, to its end, just before the plan is first written through `storage`."""
    record = Rival()
    for method in ("put_bytes", "create_bytes"):
        write = getattr(storage, method, None)
        if write is None:
            continue

        def hooked(key: str, data: bytes, write: Callable[[str, bytes], None] = write) -> None:
            if key == PLAN and not record.ran:
                record.ran = True
                record.began = rival()
            write(key, data)

        setattr(storage, method, hooked)
    return record
