"""What the serving path's network stack costs at a cold start (issue 13, item 7).

Each figure is taken in a fresh `python3.12 -S` process (a cold start pays each of these once),
`runs` times, median (min-max):

- the imports an S3 read needs on top of what the handler imports anyway (json, hashlib, socket,
  logging, ...): the kernel's own client (`sds.kernel.aws.s3`) against `http.client` (which
  brings the `email` package and `ssl`), and, for scale, boto3's import plus `client("s3")`;
- `import ssl` (only an https endpoint needs it);
- loading the trust store: the system bundle (`ssl.create_default_context()`) against the five
  Amazon Trust Services roots the kernel ships;
- a TLS handshake (TCP connect + TLS 1.3 handshake + chain and host name verification) against a
  local server whose RSA 2048 certificate is signed by a CA generated for this run, the CA added
  to either store;
- the sum of the three TLS steps per store: what HTTPS adds to a cold start.

Loopback has no network latency: on Lambda the handshake also waits for one or two round trips
to the regional endpoint, the same for either store.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path
from socket import socket
from typing import Any

# What the handler and the registry import before any S3 read (so not counted against a client).
PRELUDE = (
    "import json, hashlib, hmac, socket, select, urllib.parse, logging, threading, datetime, "
    "uuid, re, os, base64, contextlib, dataclasses, getpass, time"
)

_PROBE = r"""
import sys, time, json
PRELUDE
mode = sys.argv[1]
out = {}
started = time.perf_counter()
if mode == "kernel_client":
    import sds.kernel.aws.s3
    out["import_ms"] = (time.perf_counter() - started) * 1000
elif mode == "http_client":
    import http.client
    out["import_ms"] = (time.perf_counter() - started) * 1000
elif mode == "boto3":
    import boto3
    imported = time.perf_counter()
    boto3.client("s3", region_name="us-east-1")
    out["import_ms"] = (imported - started) * 1000
    out["client_ms"] = (time.perf_counter() - imported) * 1000
else:  # "system" or "amazon": the TLS path with that trust store
    import ssl
    imported = time.perf_counter()
    if mode == "system":
        context = ssl.create_default_context()
    else:
        from sds.kernel.aws import trust
        context = trust._context("amazon")
    loaded = time.perf_counter()
    stats = context.cert_store_stats()
    context.load_verify_locations(cafile=sys.argv[2])  # the CA of this run's test server
    import socket
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    shaken = time.perf_counter()
    out["tls_version"] = sock.version()
    sock.close()
    out["ssl_import_ms"] = (imported - started) * 1000
    out["ca_load_ms"] = (loaded - imported) * 1000
    out["handshake_ms"] = (shaken - loaded) * 1000
    out["roots"] = stats["x509_ca"]
print(json.dumps(out))
""".replace("PRELUDE", PRELUDE)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate chain, server key), made now."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("sds bench root"))
        .issuer_name(name("sds bench root"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, chain_file, key_file = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    chain_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, chain_file, key_file


class _TlsServer:
    """Accepts connections and completes TLS handshakes until closed."""

    def __init__(self, chain: Path, key: Path) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(chain, key)
        self._listener = socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            try:
                self._context.wrap_socket(raw, server_side=True).close()
            except OSError:
                raw.close()

    def close(self) -> None:
        self._listener.close()


def _probe(python: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [python, "-S", "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"TLS path probe {args[0]} failed:\n{result.stderr[-2000:]}")
    return dict(json.loads(result.stdout))


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
        "values": [round(v, 3) for v in values],
    }


def run(python: str, bundle: Path, runtime_dir: Path, runs: int) -> dict[str, Any]:
    """Every figure of the module docstring, `runs` fresh processes each, interleaved. The
    kernel is imported from the Lambda bundle (its bytecode compiled as deployed)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(bundle)}
    sdk_env = {**env, "PYTHONPATH": str(runtime_dir), "AWS_CONFIG_FILE": "/dev/null",
               "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}  # fmt: skip
    samples: dict[str, list[dict[str, Any]]] = {
        m: [] for m in ("kernel_client", "http_client", "boto3", "system", "amazon")
    }
    with tempfile.TemporaryDirectory(prefix="sds-bench-tls-") as tmp:
        ca, chain, key = _certificates(Path(tmp))
        server = _TlsServer(chain, key)
        try:
            for mode in samples:  # one unmeasured start each: the page cache, alike for all
                _probe(
                    python, [mode, str(ca), str(server.port)], sdk_env if mode == "boto3" else env
                )
            for _ in range(runs):
                for mode, found in samples.items():
                    found.append(
                        _probe(
                            python,
                            [mode, str(ca), str(server.port)],
                            sdk_env if mode == "boto3" else env,
                        )
                    )
        finally:
            server.close()

    def series(mode: str, key: str) -> dict[str, Any]:
        return _stats([float(s[key]) for s in samples[mode]])

    out: dict[str, Any] = {
        "imports_ms": {
            "kernel_client": series("kernel_client", "import_ms"),
            "http_client": series("http_client", "import_ms"),
            "boto3_import": series("boto3", "import_ms"),
            "boto3_s3_client": series("boto3", "client_ms"),
        },
        "tls": {},
    }
    for store in ("system", "amazon"):
        found = samples[store]
        out["tls"][store] = {
            "roots": found[0]["roots"],
            "tls_version": found[0]["tls_version"],
            "ssl_import_ms": series(store, "ssl_import_ms"),
            "ca_load_ms": series(store, "ca_load_ms"),
            "handshake_ms": series(store, "handshake_ms"),
            "total_ms": _stats(
                [s["ssl_import_ms"] + s["ca_load_ms"] + s["handshake_ms"] for s in found]
            ),
        }
    return out
