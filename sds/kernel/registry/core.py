"""The model registry contract, over any `ObjectStore` (local files or S3).

Layout (identical on every backend):

    models/<model>/versions/<n>/manifest.json   immutable; written last, so it marks completeness
    models/<model>/versions/<n>/<artifact>      model.onnx (serving), model.skops (estimator)
    models/<model>/aliases/<alias>.json         {version, sha256, previous, history, updated_*}
    models/<model>/events/<time>-<id>.json      append-only audit trail

Guarantees:

- Versions are write-once. A new version claims its number by creating its first artifact with
  a create-only write; a writer that loses the race moves on to the next number. The manifest is
  written last, so a version exists only once every artifact is stored; a crash leaves an
  invisible, never-reused number, not a half version.
- Every read of an artifact is checked against the sha256 in the manifest, and every read of a
  manifest checks its shape (`_read_manifest`): one its readers cannot rely on is an
  IntegrityError naming the file and the field, never a crash further on. `register` applies
  the same check (`_check_manifest`) before it claims a number, so it never writes such a
  manifest: metadata of another shape is refused, naming the field, and nothing is stored.
- Aliases move by compare-and-swap on the alias object's etag, and only to a version whose
  artifacts are all present and verified. Every move and registration writes an audit event.
  Every read of an alias checks its document's shape too (`_alias_document`): one edited by hand
  into another shape is an IntegrityError naming the field, never read as something else.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sds.kernel.errors import Refused, SdsError
from sds.kernel.registry.store import NotFound, ObjectStore, PreconditionFailed, StoreError

PRIMARY_ARTIFACT = "model.onnx"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
ALIAS_HISTORY_LIMIT = 50
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ARTIFACT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

UploadCallback = Callable[[str, int, int], None]
"""Called after each object of a version is stored: (object name, bytes of the version stored
so far, total bytes of the version including its manifest). An exception from it stops the write
like a crash would: the version stays invisible (a re-run import converges)."""


class RegistryError(SdsError):
    """Base for registry failures; messages are one clear line for the CLI."""


class VersionNotFound(RegistryError):
    http_status = 404


class IntegrityError(RegistryError):
    """An object's bytes do not match the sha256 the manifest (or the pin) promises."""


class ConcurrentUpdate(Refused, RegistryError):
    """An alias changed between read and write; re-read and decide again."""


class VersionConflict(RegistryError):
    """A version number is taken by different content."""


def default_actor() -> str:
    """Who acts, when nobody says: `user@host` (also for a user with no passwd entry)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def aws_actor(sts: Any = None) -> str:
    """Who the AWS credentials in use authenticate as: the ARN STS returns for them, e.g.
    `arn:aws:sts::123456789012:assumed-role/Deployer/alice` (a person) or the training task's
    role session. Nobody can declare it: it is whoever signs the registry's requests.

    GetCallerIdentity needs no IAM permission ("No permissions are required to perform this
    operation", even with an explicit deny: STS API Reference, GetCallerIdentity), so no role
    or policy of the project grants `sts:GetCallerIdentity`.
    """
    if sts is None:
        from sds.kernel.sdk import client

        sts = client("sts")
    return str(sts.get_caller_identity()["Arn"])


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dumps(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Version:
    """One complete, immutable model version (its manifest)."""

    manifest: Mapping[str, Any]

    @property
    def number(self) -> int:
        return int(self.manifest["version"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["sha256"])

    @property
    def metrics(self) -> Mapping[str, Any]:
        return dict(self.manifest.get("metrics", {}))

    @property
    def artifacts(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self.manifest.get("artifacts", {}))


@dataclass(frozen=True)
class AliasState:
    """Where an alias points, how it got there, and the stack of versions rollback returns to."""

    name: str
    version: int
    sha256: str
    previous: int | None
    history: tuple[int, ...]
    updated_at: str
    updated_by: str
    reason: str
    event_id: str
    etag: str = field(default="", compare=False)
    # How it got there: the audit event's type ("promoted", "rolled_back"); "" in documents
    # written before it was recorded.
    kind: str = ""

    def to_document(self) -> dict[str, Any]:
        return {
            "alias": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "previous": self.previous,
            "history": list(self.history),
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
            "reason": self.reason,
            "event_id": self.event_id,
            **({"kind": self.kind} if self.kind else {}),
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any], etag: str) -> AliasState:
        return cls(
            name=str(document["alias"]),
            version=int(document["version"]),
            sha256=str(document["sha256"]),
            previous=None if document.get("previous") is None else int(document["previous"]),
            history=tuple(int(v) for v in document.get("history", [])),
            updated_at=str(document.get("updated_at", "")),
            updated_by=str(document.get("updated_by", "")),
            reason=str(document.get("reason", "")),
            event_id=str(document.get("event_id", "")),
            etag=etag,
            kind=str(document.get("kind", "")),
        )


@dataclass(frozen=True)
class AuditTrail:
    """Audit events as read (`Registry.audit_trail`): the readable ones, and one line for each
    event file that is not (`<registry URI>/<key>: <what is wrong>`). Nothing is deleted: the
    file stays where it is for whoever investigates."""

    events: list[dict[str, Any]]
    unreadable: list[str]


class Registry:
    """One model's registry over an object store.

    The `actor` of each change is who did it (on AWS, `aws_actor()`). `declared_actor` is what
    the caller says about themselves (`$SDS_ACTOR` on AWS: a ticket, a pipeline run, the person
    who started a training task): every audit event this registry writes, and every version it
    registers, carries it as an annotation next to the actor, never instead of it.
    """

    def __init__(
        self, store: ObjectStore, model: str, *, declared_actor: str | None = None
    ) -> None:
        if not _NAME.match(model):
            raise RegistryError(f"invalid model name {model!r}: lowercase letters, digits, dashes")
        self.store = store
        self.model = model
        self.declared_actor = declared_actor or None
        self._base = f"models/{model}"

    @property
    def uri(self) -> str:
        return self.store.uri

    # Keys -------------------------------------------------------------------------------------

    def _version_key(self, version: int, name: str) -> str:
        return f"{self._base}/versions/{version}/{name}"

    def _alias_key(self, alias: str) -> str:
        return f"{self._base}/aliases/{alias}.json"

    # Versions ---------------------------------------------------------------------------------

    def _numbers_in_use(self) -> tuple[set[int], set[int]]:
        """(every claimed number, the numbers whose manifest exists)."""
        claimed: set[int] = set()
        complete: set[int] = set()
        prefix = f"{self._base}/versions/"
        for key in self.store.list(prefix):
            number, _, name = key[len(prefix) :].partition("/")
            if number.isdigit():
                claimed.add(int(number))
                if name == MANIFEST:
                    complete.add(int(number))
        return claimed, complete

    def list_versions(self) -> list[int]:
        return sorted(self._numbers_in_use()[1])

    def get_version(self, version: int) -> Version:
        try:
            raw = self.store.get(self._version_key(version, MANIFEST)).data
        except NotFound:
            raise VersionNotFound(
                f"model {self.model!r} has no version {version} in {self.uri}"
            ) from None
        return Version(manifest=_read_manifest(version, raw))

    def read_artifact(
        self, version: int, name: str = PRIMARY_ARTIFACT, *, info: Version | None = None
    ) -> bytes:
        """The artifact's bytes, verified against the manifest's sha256 and size.

        Pass `info` when the manifest was just read, to spare a second read of it.
        """
        info = self.get_version(version) if info is None else info
        entry = info.artifacts.get(name)
        if entry is None:
            raise VersionNotFound(f"version {version} has no artifact {name!r}")
        try:
            data = self.store.get(self._version_key(version, name)).data
        except NotFound:
            raise IntegrityError(f"version {version}: {name} is missing from {self.uri}") from None
        if len(data) != entry.get("size") or sha256_hex(data) != entry.get("sha256"):
            raise IntegrityError(
                f"version {version}: {name} does not match its manifest "
                f"(sha256 {sha256_hex(data)[:12]}..., expected {str(entry.get('sha256'))[:12]}...)"
            )
        return data

    def read_version(self, version: int) -> tuple[Version, dict[str, bytes]]:
        """The version and the bytes of every one of its artifacts, each verified."""
        info = self.get_version(version)
        return info, {name: self.read_artifact(version, name, info=info) for name in info.artifacts}

    def verify_version(self, version: int) -> Version:
        """The version, after reading and checking every one of its artifacts."""
        return self.read_version(version)[0]

    def check_complete(self, version: int) -> Version:
        """The version, after checking that every artifact its manifest lists is stored: one
        listing, no artifact read (`verify_version` reads each and checks its bytes). Raises as
        `read_artifact` does for an artifact that is missing."""
        info = self.get_version(version)
        stored = set(self.store.list(self._version_key(version, "")))
        for name in info.artifacts:
            if self._version_key(version, name) not in stored:
                raise IntegrityError(f"version {version}: {name} is missing from {self.uri}")
        return info

    def register(
        self,
        artifacts: Mapping[str, bytes],
        metadata: Mapping[str, Any],
        *,
        actor: str,
        reason: str = "",
        max_attempts: int = 20,
        on_upload: UploadCallback | None = None,
        on_claimed: Callable[[int], None] | None = None,
    ) -> Version:
        """Store a new version under the next free number and return it.

        `on_upload` is told after each object is stored: each artifact, then the manifest;
        `on_claimed` the number once it is claimed (a caller stopped midway can then tell
        whether that version was completed: `get_version`).
        """
        if PRIMARY_ARTIFACT not in artifacts:
            raise RegistryError(f"a version needs a {PRIMARY_ARTIFACT} artifact")
        for name in artifacts:
            if not _ARTIFACT.match(name) or name == MANIFEST:
                raise RegistryError(f"invalid artifact name {name!r}")
        started = time.monotonic()
        for _ in range(max_attempts):
            claimed, _complete = self._numbers_in_use()
            number = max(claimed, default=0) + 1
            manifest = self._manifest(number, artifacts, metadata, actor=actor, source=None)
            # Before the number is claimed: a manifest its readers would refuse would make a
            # version that exists but cannot be read. Refused here, it leaves no trace.
            try:
                _check_manifest_to_write(manifest)
            except ValueError as exc:
                raise RegistryError(
                    f"cannot register a version of model {self.model!r} in {self.uri}: "
                    f"manifest.json: {exc} (nothing was stored)"
                ) from None
            try:
                self.store.put(
                    self._version_key(number, PRIMARY_ARTIFACT),
                    artifacts[PRIMARY_ARTIFACT],
                    if_none_match=True,
                )
            except PreconditionFailed:
                continue  # another writer claimed this number first: take the next one
            if on_claimed is not None:
                on_claimed(number)
            self._write_rest(number, artifacts, manifest, on_upload)
            info = Version(manifest=manifest)
            self.record_event(
                "registered",
                version=number,
                actor=actor,
                reason=reason,
                details={"sha256": info.sha256, "duration_ms": _ms_since(started)},
            )
            return info
        raise ConcurrentUpdate(f"could not claim a version number after {max_attempts} attempts")

    def import_version(
        self,
        source: Registry,
        version: int,
        *,
        actor: str,
        reason: str = "",
        on_upload: UploadCallback | None = None,
    ) -> Version:
        """Copy `version` from another registry under the same number, verifying every byte.

        Re-running it converges: objects already copied are accepted if identical, and a version
        already complete with the same sha256 is returned as is (nothing is stored, so
        `on_upload` is not called). A number taken by different content is a conflict, never
        overwritten. `on_upload` is told after each object is stored, as in `register`.
        """
        started = time.monotonic()
        origin, artifacts = source.read_version(version)
        try:
            existing = self.get_version(version)
        except VersionNotFound:
            existing = None
        if existing is not None:
            if existing.sha256 != origin.sha256:
                raise VersionConflict(
                    f"version {version} in {self.uri} holds a different model "
                    f"(sha256 {existing.sha256[:12]}..., source {origin.sha256[:12]}...)"
                )
            self.verify_version(version)
            return existing
        manifest = dict(origin.manifest)
        manifest["source"] = {
            "registry": source.uri,
            "version": version,
            "copied_at": now_iso(),
            "copied_by": actor,
        }
        try:
            self._put_once(
                self._version_key(version, PRIMARY_ARTIFACT), artifacts[PRIMARY_ARTIFACT]
            )
            self._write_rest(version, artifacts, manifest, on_upload)
        except VersionConflict:
            # A concurrent copy of the same version finished first: its manifest differs only in
            # `source.copied_*`. That is the outcome this call wanted, not a conflict.
            try:
                winner = self.get_version(version)
            except VersionNotFound:
                raise VersionConflict(
                    f"version {version} in {self.uri} is claimed by a different, unfinished model"
                ) from None
            if winner.sha256 != origin.sha256:
                raise
            self.verify_version(version)
            return winner
        self.record_event(
            "copied",
            version=version,
            actor=actor,
            reason=reason,
            details={
                "from": source.uri,
                "sha256": origin.sha256,
                "duration_ms": _ms_since(started),
            },
        )
        return self.get_version(version)

    def _write_rest(
        self,
        number: int,
        artifacts: Mapping[str, bytes],
        manifest: Mapping[str, Any],
        on_upload: UploadCallback | None = None,
    ) -> None:
        """Store every artifact but the primary one (the caller stored it, claiming the number),
        then the manifest, telling `on_upload` after each object, the primary one first."""
        document = _dumps(manifest)
        total = sum(len(data) for data in artifacts.values()) + len(document)
        stored = 0

        def report(name: str, size: int) -> None:
            nonlocal stored
            stored += size
            if on_upload is not None:
                on_upload(name, stored, total)

        report(PRIMARY_ARTIFACT, len(artifacts[PRIMARY_ARTIFACT]))
        for name, data in artifacts.items():
            if name != PRIMARY_ARTIFACT:
                self._put_once(self._version_key(number, name), data)
                report(name, len(data))
        # The manifest goes last: its presence is what makes the version exist.
        self._put_once(self._version_key(number, MANIFEST), document)
        report(MANIFEST, len(document))

    def _put_once(self, key: str, data: bytes) -> None:
        try:
            self.store.put(key, data, if_none_match=True)
        except PreconditionFailed:
            if self.store.get(key).data != data:
                raise VersionConflict(f"{key} already exists with different content") from None

    def _manifest(
        self,
        number: int,
        artifacts: Mapping[str, bytes],
        metadata: Mapping[str, Any],
        *,
        actor: str,
        source: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        entries: dict[str, dict[str, Any]] = {
            name: {"sha256": sha256_hex(data), "size": len(data), "format": name.rsplit(".", 1)[-1]}
            for name, data in artifacts.items()
        }
        manifest = dict(metadata)
        manifest.update(
            {
                "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
                "model": self.model,
                "version": number,
                "sha256": entries[PRIMARY_ARTIFACT]["sha256"],
                "size": entries[PRIMARY_ARTIFACT]["size"],
                "formats": sorted(str(e["format"]) for e in entries.values()),
                "artifacts": entries,
                "created_at": now_iso(),
                "created_by": actor,
                "source": source,
            }
        )
        if self.declared_actor is not None:
            manifest["declared_by"] = self.declared_actor
        return manifest

    # Aliases ----------------------------------------------------------------------------------

    def get_alias(self, alias: str) -> AliasState | None:
        try:
            stored = self.store.get(self._alias_key(alias))
        except NotFound:
            return None
        try:
            return AliasState.from_document(_alias_document(alias, stored.data), stored.etag)
        except ValueError as exc:
            raise IntegrityError(
                f"alias {alias!r} in {self.uri} is corrupt ({self._alias_key(alias)}): {exc}; "
                "the audit trail records where it last moved"
            ) from None

    def list_aliases(self) -> dict[str, AliasState]:
        prefix = f"{self._base}/aliases/"
        aliases: dict[str, AliasState] = {}
        for key in self.store.list(prefix):
            name = key[len(prefix) :].removesuffix(".json")
            state = self.get_alias(name)
            if state is not None:
                aliases[name] = state
        return aliases

    def move_alias(
        self,
        alias: str,
        version: int,
        *,
        expected: AliasState | None,
        kind: str,
        actor: str,
        reason: str,
        history: tuple[int, ...] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AliasState:
        """Point `alias` at a complete, verified `version` if the alias is still `expected`.

        `history` is the rollback stack to store; by default the current version is pushed.
        Raises ConcurrentUpdate if someone else moved the alias since `expected` was read.
        """
        if not _NAME.match(alias):
            raise RegistryError(f"invalid alias name {alias!r}")
        started = time.monotonic()
        target = self.verify_version(version)
        if history is None:
            history = () if expected is None else (*expected.history, expected.version)
        event_id = _event_id()
        state = AliasState(
            name=alias,
            version=version,
            sha256=target.sha256,
            previous=None if expected is None else expected.version,
            history=history[-ALIAS_HISTORY_LIMIT:],
            updated_at=now_iso(),
            updated_by=actor,
            reason=reason,
            event_id=event_id,
            kind=kind,
        )
        try:
            etag = self.store.put(
                self._alias_key(alias),
                _dumps(state.to_document()),
                if_none_match=expected is None,
                if_match=None if expected is None else expected.etag,
            )
        except PreconditionFailed:
            raise ConcurrentUpdate(
                f"alias {alias!r} was moved by someone else while this command ran; "
                "re-run it to act on the new state"
            ) from None
        self.record_event(
            kind,
            version=version,
            actor=actor,
            reason=reason,
            alias=alias,
            event_id=event_id,
            details={
                "from_version": state.previous,
                "sha256": target.sha256,
                "duration_ms": _ms_since(started),
                **(details or {}),
            },
        )
        return AliasState(**{**state.__dict__, "etag": etag})

    def ensure_audited(self, state: AliasState) -> None:
        """Write the audit event of the alias's last move if a failure lost it.

        `move_alias` writes the alias, then its event (keyed by the alias's `event_id`). A failure
        in between leaves a moved alias without an event, and a retried command then finds the
        alias already where it wanted it. Such commands call this, so the retry completes the
        trail; the event is rebuilt from the alias document and marked `recovered`. A command
        that reads the alias in the instant between its mover's two writes rebuilds the event
        too, and the mover then keeps that one (`_put_event`).
        """
        if not state.event_id:
            return
        try:
            self.store.get(f"{self._base}/events/{state.event_id}.json")
            return
        except NotFound:
            pass
        # An alias written before moves recorded their kind: a move that pushed the version it
        # left was a promotion (a rollback to a version off the stack pushes too, but those
        # documents record their kind).
        pushed = state.previous is None or state.history[-1:] == (state.previous,)
        self.record_event(
            state.kind or ("promoted" if pushed else "rolled_back"),
            version=state.version,
            actor=state.updated_by,
            reason=state.reason,
            alias=state.name,
            event_id=state.event_id,
            details={
                "at": state.updated_at,
                "from_version": state.previous,
                "sha256": state.sha256,
                "recovered": True,
            },
            annotate=False,  # the move was not this caller's: their declared name does not apply
            rebuilt=True,
        )

    # Audit ------------------------------------------------------------------------------------

    def record_event(
        self,
        kind: str,
        *,
        version: int,
        actor: str,
        reason: str,
        alias: str | None = None,
        event_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        attempts: int = 5,
        annotate: bool = True,
        rebuilt: bool = False,
    ) -> dict[str, Any]:
        """Write one audit event; `by` is the actor, and `declared_actor` (the registry's, unless
        `annotate` is false) is added when there is one. A `rebuilt` event (`ensure_audited`)
        is written only where none is: the one found may be its mover's own."""
        event_id = event_id or _event_id()
        event = {
            "id": event_id,
            "type": kind,
            "model": self.model,
            "version": version,
            "alias": alias,
            "at": now_iso(),
            "by": actor,
            "reason": reason,
            **(details or {}),
        }
        if annotate and self.declared_actor is not None:
            event["declared_actor"] = self.declared_actor
        key = f"{self._base}/events/{event_id}.json"
        for attempt in range(attempts):
            try:
                self._put_event(key, _dumps(event), rebuilt=rebuilt)
                return event
            except StoreError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        return event  # pragma: no cover - the loop returns or raises

    def _put_event(self, key: str, data: bytes, *, rebuilt: bool) -> None:
        """Write an audit event once (events are write-once: the registry bucket refuses any
        other write there).

        A move's event can meet one that `ensure_audited` rebuilt from the alias document in the
        instant between the mover's two writes (the alias, then its event). Either way the move
        is audited once: whoever rebuilds finds its work done if any event is there, and the
        mover finds its move's event rebuilt (who moved it, why, from which version, when)
        without what only the mover knew (the duration, the declared actor, its details), which
        that rare race loses rather than failing a move that has happened.
        """
        try:
            self._put_once(key, data)
        except VersionConflict:
            if not (rebuilt or _rebuilt(self.store.get(key).data)):
                raise

    def events(self, *, alias: str | None = None) -> list[dict[str, Any]]:
        """The audit events (of `alias` and the registrations), in time order; an event file
        that cannot be read is left out (`audit_trail` says which)."""
        return self.audit_trail(alias=alias).events

    def audit_trail(self, *, alias: str | None = None) -> AuditTrail:
        """The audit events (of `alias` and the registrations), in time order, each a JSON
        object of the shape `record_event` writes, and one line for every event file that is
        not one (which object, what is wrong), so that a reader can say what it left out."""
        prefix = f"{self._base}/events/"
        found: list[dict[str, Any]] = []
        unreadable: list[str] = []
        for key in self.store.list(prefix):
            try:
                data = self.store.get(key).data
            except NotFound:
                continue  # listed, then gone (the bucket's lifecycle): nothing to read
            try:
                event = _audit_event(data)
            except ValueError as exc:
                unreadable.append(f"{self.uri}/{key}: {exc}")
                continue
            if alias is None or event.get("alias") in (alias, None):
                found.append(event)
        return AuditTrail(events=found, unreadable=unreadable)


def _audit_event(data: bytes) -> dict[str, Any]:
    """One stored audit event, checked for the fields its readers rely on; ValueError says
    what is wrong with it."""
    try:
        event = json.loads(data)
    except ValueError:  # not JSON, or not UTF-8
        raise ValueError("not valid JSON") from None
    if not isinstance(event, dict):
        raise ValueError(f"not a JSON object but {_json_type(event)}")
    if not isinstance(event.get("type"), str):
        raise ValueError("its type is not a string")
    version = event.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("its version is not an integer")
    if not isinstance(event.get("alias"), (str, type(None))):
        raise ValueError("its alias is neither a string nor null")
    return event


def _json_type(value: Any) -> str:
    """How JSON calls `value`'s type, with its article ("an array", "a string")."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def _alias_document(alias: str, raw: bytes) -> dict[str, Any]:
    """Alias `alias`'s stored document, checked for the shape `AliasState.to_document` writes:
    ValueError names the field, so that a document edited by hand is refused, never read as
    something else (a history of "12" as versions 1 and 2)."""
    try:
        document = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        raise ValueError("not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError(f"not a JSON object but {_json_type(document)}")
    if document.get("alias") != alias:
        raise ValueError(f"it describes alias {document.get('alias')!r}")

    def check(key: str, kind: str, *, required: bool = False) -> None:
        if key not in document:
            if required:
                raise ValueError(f"{key} is missing")
            return
        if not _KINDS[kind](document[key]):
            raise ValueError(f"{key} is {_json_type(document[key])}, not {kind}")

    check("version", "a version number (1 or more)", required=True)
    check("sha256", "a sha256 (64 hex digits)", required=True)
    check("previous", "a version number (1 or more) or null")
    check("history", "an array of version numbers")
    for key in ("updated_at", "updated_by", "reason", "event_id", "kind"):
        check(key, "a string")
    return document


def _read_manifest(version: int, raw: bytes) -> dict[str, Any]:
    """Version `version`'s manifest from its stored bytes, checked for the shape every reader
    of a manifest relies on (`_check_manifest`). Anything else raises IntegrityError naming
    the file and the field, as a manifest that is not JSON does, so that every command handles
    it as it handles that one."""
    where = f"version {version}: manifest.json"
    try:
        manifest = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        raise IntegrityError(f"{where} is not valid JSON") from None
    number = manifest.get("version") if isinstance(manifest, dict) else None
    if isinstance(number, bool) or number != version:
        raise IntegrityError(f"version {version}: manifest does not describe version {version}")
    try:
        _check_manifest(manifest)
    except ValueError as exc:
        raise IntegrityError(f"{where}: {exc}") from None
    document: dict[str, Any] = manifest
    return document


def _check_manifest(document: dict[str, Any]) -> None:
    """Check a manifest (as JSON parses it) for the shape every reader of a manifest relies on
    (`Version`, the CLI, the gates, the pin, the serving path): the fields the registry writes,
    and those training writes wherever they are present. ValueError names the field and what is
    wrong with it. Readers check what they read (`_read_manifest`); `Registry.register` checks
    what it is about to write, so that no version exists that its readers refuse.

    The sections with a reader of their own check themselves and say what is wrong there:
    `comparison` (`sds.kernel.comparison`) and `drift_reference` (`sds.kernel.drift`).
    """

    def check(
        parent: Mapping[str, Any], key: str, kind: str, *, at: str = "", required: bool = False
    ) -> Any:
        """`parent[key]` if it is `kind` (None if it is absent and not `required`); `at` is
        where `parent` is in the manifest, for the message."""
        field = f"{at}.{key}" if at else key
        if key not in parent:
            if required:
                raise ValueError(f"{field} is missing")
            return None
        value = parent[key]
        if not _KINDS[kind](value):
            raise ValueError(f"{field} is {_json_type(value)}, not {kind}")
        return value

    artifacts = check(document, "artifacts", "an object", required=True)
    if PRIMARY_ARTIFACT not in artifacts:
        raise ValueError(f"artifacts lists no {PRIMARY_ARTIFACT}")
    for name in artifacts:
        if not _ARTIFACT.match(name) or name == MANIFEST:
            raise ValueError(f"artifacts names an invalid artifact {name!r}")
        entry = check(artifacts, name, "an object", at="artifacts")
        listed = f"artifacts.{name}"
        check(entry, "sha256", "a sha256 (64 hex digits)", at=listed, required=True)
        check(entry, "size", "a size in bytes", at=listed, required=True)
        check(entry, "format", "a string", at=listed)
    check(document, "sha256", "a sha256 (64 hex digits)", required=True)
    if artifacts[PRIMARY_ARTIFACT]["sha256"] != document["sha256"]:
        raise ValueError(f"sha256 disagrees with artifacts.{PRIMARY_ARTIFACT}.sha256")
    check(document, "model", "a string", required=True)
    check(document, "created_at", "a string")
    check(document, "created_by", "a string")
    metrics = check(document, "metrics", "an object")
    for name in metrics or {}:
        check(metrics, name, "a number", at="metrics")
    check(document, "decision_threshold", "a number")
    if check(document, "behaviour", "an object") is not None:
        check(document["behaviour"], "alert_rate", "a number", at="behaviour")
        check(document["behaviour"], "decision_threshold", "a number", at="behaviour")
    if check(document, "feature_schema", "an object") is not None:
        check(document["feature_schema"], "features", "an array", at="feature_schema")
        check(document["feature_schema"], "aggregates", "an object", at="feature_schema")
    if check(document, "serving", "an object") is not None:
        check(document["serving"], "input", "a string", at="serving")
        check(document["serving"], "output", "a string", at="serving")
    check(document, "data", "an object")
    check(document, "params", "an object")
    check(document, "source", "an object or null")  # null: registered here, not copied


def _check_manifest_to_write(manifest: Mapping[str, Any]) -> None:
    """Check a manifest about to be written as its readers will read it: as JSON, parsed back
    (a tuple is read as an array) and checked by `_check_manifest`. ValueError names the field,
    also for a value that is not JSON at all."""
    try:
        document = _dumps(manifest)
    except (TypeError, ValueError) as exc:  # not JSON: a set, a numpy integer, a cycle
        name = next((key for key in manifest if not _is_json(manifest[key])), "a field")
        raise ValueError(f"{name} is not JSON ({exc})") from None
    _check_manifest(json.loads(document))


def _is_json(value: Any) -> bool:
    try:
        _dumps({"value": value})
    except (TypeError, ValueError):
        return False
    return True


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda v: isinstance(v, str),
    "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "a size in bytes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "a sha256 (64 hex digits)": lambda v: isinstance(v, str) and bool(_SHA256.match(v)),
    "an object": lambda v: isinstance(v, dict),
    "an object or null": lambda v: v is None or isinstance(v, dict),
    "an array": lambda v: isinstance(v, list),
    "a version number (1 or more)": lambda v: _is_version(v),
    "a version number (1 or more) or null": lambda v: v is None or _is_version(v),
    "an array of version numbers": lambda v: isinstance(v, list) and all(map(_is_version, v)),
}


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _rebuilt(data: bytes) -> bool:
    """Whether a stored audit event is one `ensure_audited` rebuilt from an alias document."""
    try:
        event = json.loads(data)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("recovered") is True


def _event_id() -> str:
    # Sortable by time, unique across writers.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
