"""The Lambda's environment, parsed into typed settings: a valid pin, no pin, or one clear error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sds.kernel.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EVENTS,
    ServingSettings,
    SettingsError,
)

SHA = "ab" * 32


def test_given_a_full_pin_then_the_settings_carry_it() -> None:
    parsed = ServingSettings.from_environ(
        {
            "MODEL_NAME": "fraud",
            "MODEL_VERSION": "12",
            "MODEL_SHA256": SHA,
            "REGISTRY_URI": "s3://bucket/prefix",
            "ENVIRONMENT": "prod",
            "MAX_EVENTS": "5",
            "MAX_BODY_BYTES": "1024",
        }
    )

    assert parsed == ServingSettings("fraud", 12, SHA, "s3://bucket/prefix", "prod", 5, 1024)
    assert parsed.has_pin


@pytest.mark.parametrize("version", [None, "", "  "])
def test_given_no_model_version_then_there_is_no_pin_and_defaults_apply(
    version: str | None,
) -> None:
    environ = {} if version is None else {"MODEL_VERSION": version, "MODEL_SHA256": "stale"}

    parsed = ServingSettings.from_environ(environ)

    assert not parsed.has_pin
    assert (parsed.model_name, parsed.model_sha256, parsed.environment) == ("fraud", None, "local")
    assert (parsed.max_events, parsed.max_body_bytes) == (
        DEFAULT_MAX_EVENTS,
        DEFAULT_MAX_BODY_BYTES,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MODEL_VERSION": "0"}, "MODEL_VERSION must be a positive integer, got '0'"),
        ({"MODEL_VERSION": "-1"}, "MODEL_VERSION must be a positive integer, got '-1'"),
        ({"MODEL_VERSION": "v3"}, "MODEL_VERSION must be a positive integer, got 'v3'"),
        ({"MODEL_VERSION": "²"}, "MODEL_VERSION must be a positive integer, got '²'"),
        ({"MODEL_VERSION": "3"}, "MODEL_SHA256 must be the 64-hex-digit sha256"),
        ({"MODEL_VERSION": "3", "MODEL_SHA256": SHA.upper()}, "MODEL_SHA256 must be"),
        ({"MODEL_VERSION": "3", "MODEL_SHA256": SHA}, "REGISTRY_URI is required"),
        ({"MAX_EVENTS": "0"}, "MAX_EVENTS must be a positive integer, got '0'"),
        ({"MAX_BODY_BYTES": "1e6"}, "MAX_BODY_BYTES must be a positive integer, got '1e6'"),
        ({"MAX_EVENTS": "³"}, "MAX_EVENTS must be a positive integer"),
    ],
)
def test_given_an_invalid_variable_then_settings_error_names_it(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        ServingSettings.from_environ(environ)

    assert message in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(
    version=st.text(max_size=6),
    sha=st.sampled_from([SHA, "", "x"]),
    limit=st.text(max_size=4),
)
def test_given_any_environment_then_parsing_gives_settings_or_a_settings_error_never_a_crash(
    version: str, sha: str, limit: str
) -> None:
    environ = {
        "MODEL_VERSION": version,
        "MODEL_SHA256": sha,
        "REGISTRY_URI": "file:///r",
        "MAX_EVENTS": limit,
    }
    try:
        parsed = ServingSettings.from_environ(environ)
    except SettingsError:
        return
    assert parsed.model_version is None or parsed.model_version >= 1
    assert parsed.max_events >= 1
