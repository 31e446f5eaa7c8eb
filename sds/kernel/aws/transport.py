"""A small HTTP/1.1 client over `socket` (and `ssl` for HTTPS), for the kernel's AWS calls.

Why not `http.client`: it imports the `email` package and `ssl` at import time, about 12 ms on
the project's machine and 40 ms in the Lambda measurements of issue 13, for features the kernel
never uses; a plain-HTTP endpoint (a local protocol server) then needs no `ssl` at all. The
surface AWS's JSON and REST-XML APIs need is small: one request at a time per connection,
`Content-Length` or chunked bodies, keep-alive. docs/decisions.md has the figures.

A `Connection` is kept alive between requests. A connection the server dropped while idle is
noticed before the request goes out (the socket reads as closed) or, if the drop races with the
request, by an empty answer; either way the request is sent once more on a fresh connection.
A connection idle for longer than `max_idle` seconds of wall-clock time is not reused at all:
a Lambda environment frozen between invocations, or restored from a SnapStart snapshot, may hold
a socket whose peer is long gone without having been told, and a request sent on it would wait
for the read timeout. Any other failure closes the connection and is raised for the caller's
retry policy.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from sds.kernel.errors import SdsError

if TYPE_CHECKING:
    import ssl

MAX_LINE = 65_536
MAX_HEADERS = 200
_NO_BODY_STATUSES = frozenset({204, 304})


class ProtocolError(SdsError, ConnectionError):
    """The peer answered with something that is not HTTP/1.1, or broke off mid-response."""


class _Dropped(SdsError, ConnectionError):
    """The peer closed the connection before sending any byte of a response."""


class Response(NamedTuple):
    status: int
    reason: str
    headers: dict[str, str]  # lowercase names; repeated headers joined by ", "
    body: bytes


TlsContexts = Callable[[str], "Sequence[ssl.SSLContext]"]


class Connection:
    """One kept-alive HTTP/1.1 connection to `scheme://host:port`.

    `tls` gives the SSL contexts to try for a host, in order: a handshake whose certificate does
    not verify against one is tried with the next (see `sds.kernel.aws.trust`); none is ever
    unverified.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        tls: TlsContexts | None = None,
        max_idle: float = 45.0,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        if scheme == "https" and tls is None:
            raise ValueError("an https connection needs TLS contexts")
        self.scheme = scheme
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._tls = tls
        self.max_idle = max_idle
        self._last_used = 0.0
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self.opened = 0  # connections made, for tests and diagnostics

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        file, sock = self._file, self._sock
        self._file = self._sock = None
        for closable in (file, sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()

    def _open(self) -> None:
        self.close()
        address = (self.host.strip("[]"), self.port)
        if self.scheme == "http":
            sock = self._tcp(address)
        else:
            assert self._tls is not None
            contexts = self._tls(self.host)
            for index, context in enumerate(contexts):
                raw = self._tcp(address)
                try:
                    sock = context.wrap_socket(raw, server_hostname=self.host.strip("[]"))
                    if index:
                        logging.getLogger("sds.aws").warning(
                            "the TLS certificate of %s did not chain to the first trust store "
                            "tried; it verified against trust store %d (slower to load)",
                            self.host,
                            index + 1,
                        )
                    break
                except OSError as exc:
                    raw.close()
                    import ssl

                    if (
                        not isinstance(exc, ssl.SSLCertVerificationError)
                        or index == len(contexts) - 1
                    ):
                        raise
        sock.settimeout(self.read_timeout)
        self._sock = sock
        self._file = sock.makefile("rb")
        self.opened += 1

    def _tcp(self, address: tuple[str, int]) -> socket.socket:
        sock = socket.create_connection(address, timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _idle_peer_closed(self) -> bool:
        """Whether the kept-alive socket became readable while idle: the peer closed it (or sent
        something unasked for, which makes it unusable too)."""
        assert self._sock is not None
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> Response:
        """Send one request and read its whole response (so the connection can be reused)."""
        reused = (
            self._sock is not None
            and time.time() - self._last_used <= self.max_idle
            and not self._idle_peer_closed()
        )
        if not reused:
            self._open()
        data = _serialize(method, target, headers, body)
        try:
            return self._exchange(method, data)
        except (_Dropped, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()
            raise
        # The server closed the kept-alive connection as the request went out: once more, fresh.
        self._open()
        try:
            return self._exchange(method, data)
        except BaseException:
            self.close()
            raise

    def _exchange(self, method: str, data: bytes) -> Response:
        assert self._sock is not None and self._file is not None
        self._sock.sendall(data)
        response, keep = _read_response(self._file, method)
        self._last_used = time.time()
        if not keep:
            self.close()
        return response


def _serialize(method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    if (body or method in ("POST", "PUT", "PATCH")) and not any(
        n.lower() == "content-length" for n, _ in headers
    ):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _line(file: BinaryIO) -> bytes:
    line = file.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError("response line too long")
    return line


def _read_response(file: BinaryIO, method: str) -> tuple[Response, bool]:
    """(response, whether the connection may be reused)."""
    while True:
        status_line = _line(file)
        if not status_line:
            raise _Dropped("the connection was closed before a response")
        version, status, reason = _parse_status(status_line)
        headers = _read_headers(file)
        if 100 <= status < 200 and status != 101:
            continue  # an interim response (100 Continue): the real one follows
        break
    keep = version == "HTTP/1.1"
    connection = headers.get("connection", "").lower()
    if "close" in connection:
        keep = False
    elif "keep-alive" in connection:
        keep = True
    if method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
        return Response(status, reason, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response(status, reason, headers, _read_chunked(file)), keep
    length_text = headers.get("content-length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise ProtocolError(f"invalid Content-Length {length_text!r}") from None
        if length < 0:
            raise ProtocolError(f"invalid Content-Length {length_text!r}")
        return Response(status, reason, headers, _read_exactly(file, length)), keep
    # No length and not chunked: the body runs until the server closes the connection.
    return Response(status, reason, headers, file.read()), False


def _parse_status(line: bytes) -> tuple[str, int, str]:
    try:
        text = line.decode("latin-1").rstrip("\r\n")
        version, _, rest = text.partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
    except ValueError:
        raise ProtocolError(f"not an HTTP status line: {line[:80]!r}") from None
    if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return version, status, reason


def _read_headers(file: BinaryIO) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(file)
        if not line:
            raise ProtocolError("the connection was closed in the response headers")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"malformed response header {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise ProtocolError(f"more than {MAX_HEADERS} response headers")


def _read_exactly(file: BinaryIO, length: int) -> bytes:
    data = file.read(length)
    if len(data) != length:
        raise ProtocolError(f"the response body ended after {len(data)} of {length} bytes")
    return data


def _read_chunked(file: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        line = _line(file)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"invalid chunk size {line[:40]!r}") from None
        if size == 0:
            break
        parts.append(_read_exactly(file, size))
        if _line(file) not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk did not end with a line break")
    while _line(file) not in (b"\r\n", b"\n", b""):
        pass  # trailer fields: none the kernel uses
    return b"".join(parts)
