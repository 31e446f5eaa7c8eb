"""The benchmark of the cold start's network stack (benchmarks/tls_path.py) measures what it says.

One fresh process per figure (the figures of a single run mean nothing): the Amazon trust store
holds the five roots the kernel ships and the system one the machine's bundle, both complete a
verified TLS 1.2+ handshake with the run's test server, and every figure is a sane duration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bundles, tls_path
from benchmarks.run import runtime_folder


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_run_of_each_probe_gives_sane_figures() -> None:
    python = bundles.lambda_python()
    bundle = bundles.build("ours", python)

    results = tls_path.run(python, bundle.path, runtime_folder(python), runs=1)

    for figure in results["imports_ms"].values():
        assert 0 < figure["median"] < 60_000 and figure["runs"] == 1
    amazon, system = results["tls"]["amazon"], results["tls"]["system"]
    assert amazon["roots"] == 5
    assert system["roots"] > 5
    for store in (amazon, system):
        assert store["tls_version"] in ("TLSv1.2", "TLSv1.3")
        for key in ("ssl_import_ms", "ca_load_ms", "handshake_ms"):
            assert 0 < store[key]["median"] < 60_000
        parts = sum(store[k]["median"] for k in ("ssl_import_ms", "ca_load_ms", "handshake_ms"))
        assert store["total_ms"]["median"] == pytest.approx(parts)
    assert Path(bundle.path, "sds", "kernel", "aws", "trust.py").is_file()
