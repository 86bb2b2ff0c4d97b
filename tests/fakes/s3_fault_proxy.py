"""A fault-injecting HTTP proxy between a gateway and moto, for tests.

Some S3 failures no real part produces on demand: a connection that dies
after the first megabyte of an UploadPart, a GetObject body that stops
halfway, ``503 SlowDown`` for exactly the next two requests, an S3 that takes
ten seconds to answer one kind of request. Stopping moto (``helpers.LocalMoto``)
only gives "everything is down". This proxy forwards HTTP/1.1 from the gateway
(its ``s3_endpoint`` is ``proxy.url``) to moto, and injects those faults into
the requests a test picks, switched on and off while the test runs:

* ``delay``: wait before forwarding. A request whose client leaves during the
  wait is dropped, never forwarded (``Fault.dropped``): S3 never received it.
* ``cut_request`` / ``cut_response``: forward ``after_bytes`` bytes of the
  request body upstream, or of the response body back (all of a shorter
  body), then reset both connections (TCP RST). Bytes in flight at the reset
  may be lost: the receiver sees at most ``after_bytes``.
* ``slow_down``: answer ``503 SlowDown``, S3's throttling error, without
  forwarding.
* ``corrupt_request``: flip the bits of the request body's byte at
  ``after_bytes`` (bytes corrupted in flight, the framing left intact).

A fault can be limited to an HTTP method, a predicate on the request (see
``upload_part``, ``get_object``, ... below) and a number of requests
(``times``; None: all). The proxy records every request (``seen``) and every
fault counts the requests it ``fired`` on.

The proxy answers ``Expect: 100-continue`` itself (botocore sends it with
every file-like body, and aiohttp then holds the body back until
``100 Continue``), so it can delay, cut or discard a body before moto sees a
byte of it. Each request gets an upstream connection of its own.

It runs its own asyncio loop in a daemon thread, so sync and async tests alike
can use it: ``with FaultProxy(moto_endpoint) as proxy: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypedDict, Unpack
from urllib.parse import parse_qs, urlsplit

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "expect", "proxy-connection", "te", "upgrade"}
_PIECE = 64 * 1024


@dataclass(frozen=True)
class Request:
    """What a fault's predicate sees of a request (path-style addressing)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names

    @property
    def key(self) -> str:
        """The object key; "" for a request on a bucket."""
        return self.path.lstrip("/").partition("/")[2]


Predicate = Callable[[Request], bool]


def upload_part(r: Request) -> bool:
    return r.method == "PUT" and "uploadId" in r.query and "partNumber" in r.query


def put_object(r: Request) -> bool:
    """A single PutObject (not UploadPart, not CopyObject)."""
    return (
        r.method == "PUT" and bool(r.key) and not r.query and "x-amz-copy-source" not in r.headers
    )


def create_multipart_upload(r: Request) -> bool:
    return r.method == "POST" and "uploads" in r.query


def complete_multipart_upload(r: Request) -> bool:
    return r.method == "POST" and "uploadId" in r.query


def get_object(r: Request) -> bool:
    return r.method == "GET" and bool(r.key) and not r.query


def head_object(r: Request) -> bool:
    return r.method == "HEAD" and bool(r.key)


def list_objects(r: Request) -> bool:
    return r.method == "GET" and not r.key and "list-type" in r.query


class When(TypedDict, total=False):
    """The requests a fault applies to: those ``match`` accepts, of
    ``method``, at most ``times`` of them. Unset: no limit."""

    match: Predicate | None
    method: str | None
    times: int | None


@dataclass
class Fault:
    kind: Literal[
        "delay", "delay_response", "cut_request", "cut_response", "slow_down", "corrupt_request"
    ]
    match: Predicate | None = None
    method: str | None = None
    times: int | None = None
    seconds: float = 0.0  # delay, delay_response
    after_bytes: int = 0  # cut_request, cut_response; corrupt_request: the byte flipped
    fired: int = 0  # requests it was applied to
    dropped: int = 0  # delay: requests whose client left during the wait

    def applies(self, request: Request) -> bool:
        return (
            (self.times is None or self.fired < self.times)
            and self.method in (None, request.method)
            and (self.match is None or self.match(request))
        )


class _Cut(Exception):
    """A cut fault has let its bytes through: reset the connections."""


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._seen: list[Request] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control, from any thread --------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        listening = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(listening, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def delay(self, seconds: float, **when: Unpack[When]) -> Fault:
        return self.add(Fault("delay", seconds=seconds, **when))

    def delay_response(self, seconds: float, **when: Unpack[When]) -> Fault:
        """S3 does the request at once; its answer reaches the client
        ``seconds`` later (a slow network on the way back): the request
        takes effect even if the client gives up waiting."""
        return self.add(Fault("delay_response", seconds=seconds, **when))

    def cut_request(self, after_bytes: int, **when: Unpack[When]) -> Fault:
        return self.add(Fault("cut_request", after_bytes=after_bytes, **when))

    def cut_response(self, after_bytes: int, **when: Unpack[When]) -> Fault:
        return self.add(Fault("cut_response", after_bytes=after_bytes, **when))

    def slow_down(self, **when: Unpack[When]) -> Fault:
        return self.add(Fault("slow_down", **when))

    def corrupt_request(self, at_byte: int, **when: Unpack[When]) -> Fault:
        return self.add(Fault("corrupt_request", after_bytes=at_byte, **when))

    def clear(self) -> None:
        """Switch every fault off (their counters stay readable)."""
        with self._lock:
            self._faults.clear()

    def seen(self, match: Predicate | None = None) -> int:
        """How many requests (matching ``match``) have reached the proxy."""
        with self._lock:
            return sum(1 for r in self._seen if match is None or match(r))

    def _pick(self, request: Request) -> dict[str, Fault]:
        """Record ``request``; return its faults, the first of each kind."""
        picked: dict[str, Fault] = {}
        with self._lock:
            self._seen.append(request)
            for fault in self._faults:
                if fault.kind not in picked and fault.applies(request):
                    fault.fired += 1
                    picked[fault.kind] = fault
        return picked

    # --- the proxy, on its own loop ------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a peer went away, or sent something this proxy does not handle
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's start_server logs a cancelled handler)
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; return whether the connection stays open."""
        try:
            start, headers, fields = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:
            return False  # closed between requests
        method, target, _ = start.split(" ", 2)
        url = urlsplit(target)
        request = Request(method, url.path, parse_qs(url.query, keep_blank_values=True), fields)
        faults = self._pick(request)
        keep_alive = fields.get("connection", "").lower() != "close"
        if "delay" in faults and not await self._wait_unless_gone(reader, faults["delay"].seconds):
            with self._lock:
                faults["delay"].dropped += 1
            return False
        if fields.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _framing(fields, method, request=True)
        if "slow_down" in faults:
            await _copy_body(reader, None, body, None)
            content = b"" if method == "HEAD" else SLOW_DOWN_BODY
            writer.write(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(content)}\r\n\r\n".encode()
                + content
            )
            await writer.drain()
            return keep_alive

        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            up_writer.write(_head(start, headers, "Connection: close"))
            cut = faults.get("cut_request")
            flip = faults.get("corrupt_request")
            await _copy_body(
                reader, up_writer, body, _limit(cut), None if flip is None else flip.after_bytes
            )
            while True:  # skip interim answers (this proxy sent its own 100 Continue)
                start, headers, fields = _parse_head(await up_reader.readuntil(b"\r\n\r\n"))
                status = int(start.split(" ", 2)[1])
                if status >= 200:
                    break
            if "delay_response" in faults:
                await asyncio.sleep(faults["delay_response"].seconds)
            body = _framing(fields, method, status=status)
            writer.write(_head(start, headers, *(["Connection: close"] if body == "eof" else [])))
            cut = faults.get("cut_response")
            await _copy_body(up_reader, writer, body, _limit(cut))
            await writer.drain()
        except _Cut:
            await _reset(writer)
            await _reset(up_writer)
            return False
        finally:
            up_writer.close()
        return keep_alive and body != "eof"

    async def _wait_unless_gone(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as the client has closed the connection.
        (A body already sent without Expect keeps at_eof() False: such a
        request is forwarded after the wait, as S3 would have received it.)"""
        deadline = self._loop.time() + seconds
        while not (gone := reader.at_eof() or reader.exception() is not None):
            if self._loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        return not gone


def _limit(cut: Fault | None) -> int | None:
    return None if cut is None else cut.after_bytes


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """The start line, the header fields in order, and a lower-cased lookup."""
    start, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = [(name, value) for name, _, value in (line.partition(":") for line in lines)]
    return start, headers, {name.strip().lower(): value.strip() for name, value in headers}


def _head(start: str, headers: list[tuple[str, str]], *extra: str) -> bytes:
    """A message head to forward: hop-by-hop fields dropped, ``extra`` added."""
    kept = [f"{n}:{v}" for n, v in headers if n.strip().lower() not in _HOP_BY_HOP]
    return "\r\n".join([start, *kept, *extra, "", ""]).encode("latin-1")


def _framing(
    fields: dict[str, str], method: str, *, request: bool = False, status: int = 200
) -> str | int:
    """How a body ends: after a byte count, with a zero chunk ("chunked"), or
    when the connection closes ("eof", responses only)."""
    if not request and (method == "HEAD" or status in (204, 304)):
        return 0
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return "chunked"
    if "content-length" in fields:
        return int(fields["content-length"])
    return 0 if request else "eof"


async def _copy_body(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter | None,
    body: str | int,
    limit: int | None,
    flip: int | None = None,
) -> None:
    """Copy one body, framing included, to ``dst`` (None: read and discard it).
    With a ``limit``, raise _Cut once that many payload bytes went through,
    or at the end of a shorter body. With ``flip``, the payload byte at that
    offset goes through with its bits inverted."""
    passed = 0
    offset = 0  # payload bytes seen, for ``flip``

    async def send(data: bytes, payload: bool = True) -> None:
        nonlocal passed, offset
        if payload and flip is not None and offset <= flip < offset + len(data):
            data = (
                data[: flip - offset]
                + bytes([data[flip - offset] ^ 0xFF])
                + data[flip - offset + 1 :]
            )
        if payload:
            offset += len(data)
        if dst is None:
            return
        if payload and limit is not None:
            data = data[: limit - passed]
            passed += len(data)
        dst.write(data)
        if limit is not None and passed >= limit:
            raise _Cut
        await dst.drain()

    async def copy_exactly(count: int) -> None:
        while count:
            data = await src.read(min(count, _PIECE))
            if not data:
                raise asyncio.IncompleteReadError(b"", count)
            count -= len(data)
            await send(data)

    if limit == 0 and dst is not None:
        raise _Cut
    if isinstance(body, int):
        await copy_exactly(body)
    elif body == "eof":
        while data := await src.read(_PIECE):
            await send(data)
    else:  # chunked: pass the framing through, count the payload
        while size := int((line := await src.readuntil(b"\r\n")).split(b";")[0], 16):
            await send(line, payload=False)
            await copy_exactly(size)
            await send(await src.readexactly(2), payload=False)
        await send(line, payload=False)
        while (trailer := await src.readuntil(b"\r\n")) != b"\r\n":
            await send(trailer, payload=False)
        await send(trailer, payload=False)
    if limit is not None and dst is not None:
        raise _Cut  # all of a shorter body went through: cut before the answer


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Hand what is buffered to the kernel (briefly), then close with a RST."""
    writer.transport.set_write_buffer_limits(0)
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.drain(), 1.0)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
