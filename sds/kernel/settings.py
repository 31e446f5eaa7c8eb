"""The inference function's settings: the contract between the CDK app and the handler.

`function_environment` writes the Lambda's environment variables (the stack calls it with the pin
from models.lock.json); `ServingSettings.from_environ` parses them in the handler, and
`served_model` reads the model a published Lambda version pins (what `sds status` and the AWS
rollback look at). One writer, one parser: a variable renamed here is renamed everywhere.

`PIN_VARIABLES` lists every pair of variables that pins a model, by role, and `model_pins` reads
them all: pruning keeps every published version a protected model is pinned in, whichever
variable pins it, so a new pin (the shadow's `SHADOW_MODEL_VERSION`) is one line in that table.

Variables: MODEL_NAME, ENVIRONMENT, REGISTRY_URI, MAX_EVENTS, MAX_BODY_BYTES, FEATURE_STORE_URI
(where the account aggregates are read: `dynamodb://table` on AWS, `sqlite:///path` locally),
FEATURE_STORE_TIMEOUT_MS (with a feature store: each attempt's connect and read timeout, two
attempts at most, so a slow table costs a request at most a few timeouts and never a hang),
WHEN_FEATURES_UNAVAILABLE (`refuse`: answer 503; `score`: score without them, flagged),
CAPTURE_SAMPLE_RATE (the share of scored payments captured, 0 to 1, chosen per event id) and
CAPTURE_EXCLUDE (comma-separated fields left out of capture records: `sds.kernel.capture`), and,
only when the environment has a pin, MODEL_VERSION and MODEL_SHA256 (absent means "no model
deployed", a valid state answered with 503, and a first promotion shows in `cdk diff` as two
added variables), and, only when the environment has a shadow pin (`sds shadow`),
SHADOW_MODEL_VERSION and SHADOW_MODEL_SHA256: the challenger loaded beside the live model, which
scores the same payments for the capture and decides nothing. A malformed shadow pin never makes
the function answer 503: the handler serves without a challenger and says why (`shadow_error`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sds.kernel.errors import Unavailable
from sds.kernel.lock import Pin

MODEL_NAME = "MODEL_NAME"
MODEL_VERSION = "MODEL_VERSION"
MODEL_SHA256 = "MODEL_SHA256"
REGISTRY_URI = "REGISTRY_URI"
ENVIRONMENT = "ENVIRONMENT"
MAX_EVENTS = "MAX_EVENTS"
MAX_BODY_BYTES = "MAX_BODY_BYTES"
FEATURE_STORE_URI = "FEATURE_STORE_URI"
FEATURE_STORE_TIMEOUT_MS = "FEATURE_STORE_TIMEOUT_MS"
WHEN_FEATURES_UNAVAILABLE = "WHEN_FEATURES_UNAVAILABLE"
CAPTURE_SAMPLE_RATE = "CAPTURE_SAMPLE_RATE"
CAPTURE_EXCLUDE = "CAPTURE_EXCLUDE"
SHADOW_MODEL_VERSION = "SHADOW_MODEL_VERSION"
SHADOW_MODEL_SHA256 = "SHADOW_MODEL_SHA256"

DEFAULT_MODEL_NAME = "fraud"
DEFAULT_MAX_EVENTS = 100
DEFAULT_MAX_BODY_BYTES = 262_144
DEFAULT_FEATURE_STORE_TIMEOUT_MS = 500
# What the handler does when the feature store cannot answer: refuse (503, the caller's fallback
# decides) or score with the aggregates missing, flagged in the response and counted in a metric.
FEATURES_UNAVAILABLE_POLICIES = ("refuse", "score")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PinVariables:
    """The two variables that pin one model in the function's environment, and its role there."""

    role: str
    version: str
    sha256: str


# The model the handler serves.
LIVE_PIN = PinVariables("live", MODEL_VERSION, MODEL_SHA256)
# The challenger that scores beside it and decides nothing.
SHADOW_PIN = PinVariables("shadow", SHADOW_MODEL_VERSION, SHADOW_MODEL_SHA256)
# Every model a function's environment can pin, by role.
PIN_VARIABLES: tuple[PinVariables, ...] = (LIVE_PIN, SHADOW_PIN)


class SettingsError(Unavailable, ValueError):
    """The function's environment variables are invalid; the message names the variable (the
    function answers 503 until they are fixed)."""


@dataclass(frozen=True)
class ServingSettings:
    model_name: str
    model_version: int | None
    model_sha256: str | None
    registry_uri: str | None
    environment: str = "local"
    max_events: int = DEFAULT_MAX_EVENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    feature_store_uri: str | None = None
    when_features_unavailable: str = "refuse"
    feature_store_timeout_ms: int = DEFAULT_FEATURE_STORE_TIMEOUT_MS
    capture_sample_rate: float = 1.0
    capture_exclude: tuple[str, ...] = ()
    shadow_version: int | None = None
    shadow_sha256: str | None = None
    # Why the shadow pin could not be read (the function then serves without a challenger).
    shadow_error: str | None = None
    # Where the pin comes from: False, the function's environment, so a new pin is served once
    # it is deployed; True, models.lock.json itself, read at each request (`sds serve`), so a
    # promotion is served on the next request. Not a variable: no function reads the lock file.
    follows_lock_file: bool = False

    @property
    def has_pin(self) -> bool:
        return self.model_version is not None

    @property
    def pin(self) -> Pin | None:
        if self.model_version is None or self.model_sha256 is None:
            return None
        return Pin(version=self.model_version, sha256=self.model_sha256)

    @property
    def shadow_pin(self) -> Pin | None:
        if self.shadow_version is None or self.shadow_sha256 is None:
            return None
        return Pin(version=self.shadow_version, sha256=self.shadow_sha256)

    def for_shadow(self) -> ServingSettings | None:
        """The settings that load the challenger the way the live model is loaded (same registry,
        same verification), or None without a shadow pin."""
        shadow = self.shadow_pin
        if shadow is None:
            return None
        return replace(self, model_version=shadow.version, model_sha256=shadow.sha256)

    def to_environ(self) -> dict[str, str]:
        """These settings as the function's environment variables (see `function_environment`)."""
        if self.registry_uri is None:
            raise SettingsError(f"{REGISTRY_URI} is required")
        return function_environment(
            model_name=self.model_name,
            environment=self.environment,
            pin=self.pin,
            registry_uri=self.registry_uri,
            max_events=self.max_events,
            max_body_bytes=self.max_body_bytes,
            feature_store_uri=self.feature_store_uri,
            when_features_unavailable=self.when_features_unavailable,
            feature_store_timeout_ms=self.feature_store_timeout_ms,
            capture_sample_rate=self.capture_sample_rate,
            capture_exclude=self.capture_exclude,
            shadow=self.shadow_pin,
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServingSettings:
        """Parse the variables `function_environment` writes; the error names the variable.

        An absent or empty MODEL_VERSION means "no model deployed", which is a valid state.
        """
        pin = _parse_pin(environ)
        registry = environ.get(REGISTRY_URI, "").strip() or None
        if pin is not None and registry is None:
            raise SettingsError(f"{REGISTRY_URI} is required when {MODEL_VERSION} is set")
        shadow: Pin | None = None
        shadow_error: str | None = None
        try:
            shadow = _parse_pin(environ, SHADOW_PIN)
        except SettingsError as exc:
            shadow_error = str(exc)
        return cls(
            model_name=environ.get(MODEL_NAME, "").strip() or DEFAULT_MODEL_NAME,
            model_version=None if pin is None else pin.version,
            model_sha256=None if pin is None else pin.sha256,
            registry_uri=registry,
            environment=environ.get(ENVIRONMENT, "").strip() or "local",
            max_events=_positive_int(environ, MAX_EVENTS, DEFAULT_MAX_EVENTS),
            max_body_bytes=_positive_int(environ, MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
            feature_store_uri=environ.get(FEATURE_STORE_URI, "").strip() or None,
            when_features_unavailable=_policy(environ),
            feature_store_timeout_ms=_positive_int(
                environ, FEATURE_STORE_TIMEOUT_MS, DEFAULT_FEATURE_STORE_TIMEOUT_MS
            ),
            capture_sample_rate=_sample_rate(environ),
            capture_exclude=_exclude(environ),
            shadow_version=None if shadow is None else shadow.version,
            shadow_sha256=None if shadow is None else shadow.sha256,
            shadow_error=shadow_error,
        )


def function_environment(
    *,
    model_name: str,
    environment: str,
    pin: Pin | None,
    registry_uri: str,
    max_events: int,
    max_body_bytes: int,
    feature_store_uri: str | None,
    when_features_unavailable: str,
    feature_store_timeout_ms: int = DEFAULT_FEATURE_STORE_TIMEOUT_MS,
    capture_sample_rate: float = 1.0,
    capture_exclude: tuple[str, ...] = (),
    shadow: Pin | None = None,
) -> dict[str, str]:
    """The inference function's environment variables for one environment, its pin and its
    shadow pin."""
    # Here, not at the top: the pruner reads model pins from this module without numpy.
    from sds.kernel.capture import CaptureError, check_exclude, check_sample_rate

    try:
        check_sample_rate(capture_sample_rate)
        check_exclude(capture_exclude)
    except CaptureError as exc:
        raise SettingsError(str(exc)) from None
    if when_features_unavailable not in FEATURES_UNAVAILABLE_POLICIES:
        raise SettingsError(
            f"{WHEN_FEATURES_UNAVAILABLE} must be one of {', '.join(FEATURES_UNAVAILABLE_POLICIES)}"
        )
    variables = {
        MODEL_NAME: model_name,
        ENVIRONMENT: environment,
        REGISTRY_URI: registry_uri,
        MAX_EVENTS: str(max_events),
        MAX_BODY_BYTES: str(max_body_bytes),
        WHEN_FEATURES_UNAVAILABLE: when_features_unavailable,
        CAPTURE_SAMPLE_RATE: repr(float(capture_sample_rate)),
    }
    if capture_exclude:
        variables[CAPTURE_EXCLUDE] = ",".join(capture_exclude)
    if feature_store_uri is not None:
        variables[FEATURE_STORE_URI] = feature_store_uri
        variables[FEATURE_STORE_TIMEOUT_MS] = str(feature_store_timeout_ms)
    if pin is not None:
        variables[MODEL_VERSION] = str(pin.version)
        variables[MODEL_SHA256] = pin.sha256
    if shadow is not None:
        if pin is None:
            raise SettingsError("a shadow pin needs a live pin: the shadow never decides alone")
        variables[SHADOW_MODEL_VERSION] = str(shadow.version)
        variables[SHADOW_MODEL_SHA256] = shadow.sha256
    return variables


def served_model(environ: Mapping[str, str]) -> Pin | None:
    """The model a function's environment pins, or None if it pins none or pins it badly.

    For tools that inspect deployed versions: a malformed pin is "serves no model" to them
    (the handler itself refuses it with a 503 and says why).
    """
    try:
        return _parse_pin(environ)
    except SettingsError:
        return None


def model_pins(
    environ: Mapping[str, str], variables: tuple[PinVariables, ...] | None = None
) -> dict[str, Pin]:
    """Every model a function's environment pins, by role (`PIN_VARIABLES` unless `variables`).

    Like `served_model`, a malformed pin is left out: to a tool it pins nothing.
    """
    found: dict[str, Pin] = {}
    for pair in PIN_VARIABLES if variables is None else variables:
        try:
            pin = _parse_pin(environ, pair)
        except SettingsError:
            continue
        if pin is not None:
            found[pair.role] = pin
    return found


def _parse_pin(environ: Mapping[str, str], pair: PinVariables = LIVE_PIN) -> Pin | None:
    version_text = environ.get(pair.version, "").strip()
    if not version_text:
        return None
    if not _is_decimal(version_text) or int(version_text) < 1:
        raise SettingsError(f"{pair.version} must be a positive integer, got {version_text!r}")
    sha = environ.get(pair.sha256, "").strip()
    if not _SHA256.match(sha):
        raise SettingsError(f"{pair.sha256} must be the 64-hex-digit sha256 of the pinned model")
    return Pin(version=int(version_text), sha256=sha)


def _policy(environ: Mapping[str, str]) -> str:
    text = environ.get(WHEN_FEATURES_UNAVAILABLE, "").strip() or "refuse"
    if text not in FEATURES_UNAVAILABLE_POLICIES:
        raise SettingsError(
            f"{WHEN_FEATURES_UNAVAILABLE} must be one of "
            f"{', '.join(FEATURES_UNAVAILABLE_POLICIES)}, got {text[:40]!r}"
        )
    return text


def _sample_rate(environ: Mapping[str, str]) -> float:
    text = environ.get(CAPTURE_SAMPLE_RATE, "").strip()
    if not text:
        return 1.0
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:  # NaN fails too
        raise SettingsError(
            f"{CAPTURE_SAMPLE_RATE} must be a number from 0 to 1, got {text[:40]!r}"
        )
    return rate


def _exclude(environ: Mapping[str, str]) -> tuple[str, ...]:
    from sds.kernel.capture import CaptureError, check_exclude

    names = [n.strip() for n in environ.get(CAPTURE_EXCLUDE, "").split(",") if n.strip()]
    try:
        return check_exclude(names)
    except CaptureError as exc:
        raise SettingsError(f"{CAPTURE_EXCLUDE}: {exc}") from None


def _is_decimal(text: str) -> bool:
    # str.isdigit() also accepts "²", which int() rejects: that ValueError would escape as a crash
    # at init (a crash loop) instead of a SettingsError and a 503.
    return text.isascii() and text.isdigit()


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not _is_decimal(text) or int(text) < 1:
        raise SettingsError(f"{name} must be a positive integer, got {text!r}")
    return int(text)
