"""A tiny HTTP/1.1 server on loopback whose every answer the test scripts, for what a protocol
server will not do on demand: 5xx and throttling answers, connections dropped before or instead
of an answer, idle keep-alive connections closed by the server, answers that never come, and
TLS with a certificate made for the test. It also checks each request's SigV4 signature the way
AWS does (recomputed over the headers the request says it signed, with botocore's signer), so a
test sees what went over the wire, not what the client meant to send.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DROP = "drop"  # close the connection without answering
HANG = "hang"  # never answer (the client's read timeout fires)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    close_after: bool = False  # close the connection after answering, without saying so
    chunked: bool = False


def json_answer(document: Any, status: int = 200, *, crc32: bool = True) -> Answer:
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    if crc32:
        headers["x-amz-crc32"] = str(zlib.crc32(body) & 0xFFFFFFFF)
    return Answer(status, body, headers)


def dynamodb_error(code: str, message: str, status: int = 400) -> Answer:
    return json_answer(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}, status
    )


def s3_error(code: str, message: str, status: int, **headers: str) -> Answer:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>REQ123</RequestId></Error>"
    ).encode()
    return Answer(status, body, {"Content-Type": "application/xml", **headers})


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]  # lowercase names
    body: bytes
    connection: int  # which accepted connection carried it (1, 2, ...)


Action = Answer | str | Callable[[Received], "Answer | str"]


class ScriptedServer:
    """Answers request n with `script[n]` (the last entry repeats), on http or https."""

    def __init__(self, script: list[Action], *, tls: ssl.SSLContext | None = None) -> None:
        self.script = list(script)
        self.received: list[Received] = []
        self.connections = 0
        self._tls = tls
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _next(self, received: Received) -> Answer | str:
        with self._lock:
            self.received.append(received)
            index = min(len(self.received) - 1, len(self.script) - 1)
            action = self.script[index]
        return action(received) if callable(action) else action

    def _serve(self, raw: socket.socket, number: int) -> None:
        try:
            sock = self._tls.wrap_socket(raw, server_side=True) if self._tls else raw
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self._open.append(sock)
        reader = sock.makefile("rb")
        try:
            while not self._closed.is_set():
                line = reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = reader.readline().decode("latin-1")
                    if header in ("\r\n", "\n", ""):
                        break
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                action = self._next(Received(method, target, headers, body, number))
                if action == DROP:
                    return
                if action == HANG:
                    self._closed.wait(30)
                    return
                assert isinstance(action, Answer)
                sock.sendall(_render(action, head=method == "HEAD"))
                if action.close_after:
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def _render(answer: Answer, *, head: bool) -> bytes:
    lines = [f"HTTP/1.1 {answer.status} Whatever"]
    headers = dict(answer.headers)
    if answer.chunked:
        headers["Transfer-Encoding"] = "chunked"
        middle = len(answer.body) // 2
        chunks = [answer.body[:middle], answer.body[middle:]]
        payload = (
            b"".join(f"{len(c):x};ext=1\r\n".encode() + c + b"\r\n" for c in chunks if c)
            + b"0\r\nX-Trailer: t\r\n\r\n"
        )
    else:
        headers["Content-Length"] = str(len(answer.body))
        payload = answer.body
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else payload)


def signature_is_valid(
    received: Received, *, secret_key: str, service: str, region: str, host: str
) -> bool:
    """Recompute the request's signature as AWS does: over the headers its Authorization names
    as signed, as they arrived, with botocore's signer; compare."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials as BotoCredentials

    authorization = received.headers["authorization"]
    credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    access_key = credential.split("/", 1)[0]
    signed_names = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    when = dt.datetime.strptime(received.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    request = AWSRequest(
        method=received.method,
        url=f"http://{host}{received.target}",
        data=received.body,
        headers={n: received.headers[n] for n in signed_names if n != "host"},
    )
    token = received.headers.get("x-amz-security-token")
    credentials = BotoCredentials(access_key, secret_key, token)
    signer: SigV4Auth
    if service == "s3":
        unsigned = received.headers.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
        request.context["client_config"] = Config(s3={"payload_signing_enabled": not unsigned})
        signer = S3SigV4Auth(credentials, service, region)
    else:
        signer = SigV4Auth(credentials, service, region)
    import unittest.mock

    with unittest.mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    return bool(request.headers["Authorization"] == authorization)


def self_signed_tls(folder: Path, host: str = "127.0.0.1") -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate made now for `host`, and the CA file that trusts it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sds test server")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "server.pem"
    key_file = folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file
