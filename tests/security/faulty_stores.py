"""Fault injection under the registry: fail exactly the k-th store operation, before or after it.

Two injectors with the same knobs, so one test drives both backends:

- `FaultyStore` wraps any `ObjectStore` (the file backend here): a backend-agnostic test of the
  registry's ordering guarantees.
- `S3Faults` hooks botocore events on a real S3 protocol server (moto in server mode):
  `before-call` raises before the request is sent (the request is lost), `after-call` raises
  after S3 has applied it (the response is lost), exactly the two failures a network can cause.

`mode="before"`: the operation never happens. `mode="after"`: it happens, and the caller is told
it failed, the harder case: a retry must recognise its own landed write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sds.kernel.registry.store import ObjectStore, StoredObject

T = TypeVar("T")
MODES = ("before", "after")
S3_MODES = ("before", "after", "retried")


class InjectedFault(Exception):
    """A failure the test injected (a dropped connection, a 5xx after the SDK's retries)."""


class Injector:
    def __init__(self) -> None:
        self.calls = 0
        self.fail_at: int | None = None
        self.mode = "before"
        self.operations: list[str] = []
        self.fired: str | None = None
        self.raises: Callable[[str], BaseException] = InjectedFault

    def arm(
        self,
        fail_at: int | None,
        mode: str = "before",
        raises: Callable[[str], BaseException] = InjectedFault,
    ) -> None:
        """Fail the `fail_at`-th operation (`mode`: before it reaches the store, or after it was
        applied) with `raises(what happened)`: a fault, or an interruption (KeyboardInterrupt:
        Ctrl-C or SIGTERM landing between two operations)."""
        self.calls, self.fail_at, self.mode, self.operations, self.fired = (
            0,
            fail_at,
            mode,
            [],
            None,
        )
        self.raises = raises

    def _before(self, what: str) -> None:
        self.calls += 1
        self.operations.append(what)
        if self.calls == self.fail_at and self.mode == "before":
            self.fired = f"{what}: lost before it reached the store"
            raise self.raises(self.fired)

    def _after(self, what: str) -> None:
        if self.calls == self.fail_at and self.mode == "after":
            self.fired = f"{what}: applied, then the response was lost"
            raise self.raises(self.fired)


class FaultyStore:
    """An ObjectStore that consults a (shared) injector around every operation."""

    def __init__(self, inner: ObjectStore, injector: Injector) -> None:
        self.inner = inner
        self.injector = injector

    @property
    def uri(self) -> str:
        return self.inner.uri

    def _run(self, what: str, work: Callable[[], T]) -> T:
        self.injector._before(what)
        result = work()
        self.injector._after(what)
        return result

    def get(self, key: str) -> StoredObject:
        return self._run(f"get {key}", lambda: self.inner.get(key))

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        return self._run(
            f"put {key}",
            lambda: self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match),
        )

    def list(self, prefix: str) -> list[str]:
        return self._run(f"list {prefix}", lambda: self.inner.list(prefix))


class S3Faults(Injector):
    """Faults injected into one botocore S3 client through its event hooks.

    A third mode exists only here, `"retried"`: the request reaches S3 and is applied, the
    connection then drops before the response (`ConnectionClosedError` from `before-send`,
    after sending the request itself), and the SDK's standard retry sends it again, the way a
    real network fails. The registry must recognise its own landed write (a create-only write
    answered 412 with identical bytes, a compare-and-swap answered 412 with its own document).
    """

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._lose_response_of: int | None = None
        client.meta.events.register("before-call.s3.*", self._before_call)
        client.meta.events.register("before-send.s3.*", self._before_send)
        client.meta.events.register("after-call.s3.*", self._after_call)

    def arm(self, fail_at: int | None, mode: str = "before") -> None:
        super().arm(fail_at, mode)
        self._lose_response_of = None

    def _before_send(self, request: Any, **_: Any) -> None:
        if self._lose_response_of is None or self._lose_response_of != self.calls:
            return
        from botocore.exceptions import ConnectionClosedError
        from botocore.httpsession import URLLib3Session

        self._lose_response_of = None
        URLLib3Session().send(request)  # S3 applies it ...
        self.fired = f"{self.operations[-1]}: applied, connection dropped, retried by the SDK"
        raise ConnectionClosedError(endpoint_url=request.url)  # ... and the answer is lost

    def _before_call(self, model: Any, params: Any, **_: Any) -> None:
        self._before(f"{model.name} {params.get('Key', params.get('Prefix', ''))}")
        if self.calls == self.fail_at and self.mode == "retried":
            self._lose_response_of = self.calls

    def _after_call(self, model: Any, http_response: Any, **_: Any) -> None:
        if http_response is not None and http_response.status_code < 300:
            self._after(model.name)
