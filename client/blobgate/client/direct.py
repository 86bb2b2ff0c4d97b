"""Direct transfers from the client's side: the GET of the presigned URL a
server answers a direct Download with (``DirectDownload``), and the PUT of
a direct upload's part (``put``; ``direct_upload``), over aiohttp (already
one of the client's dependencies, through Consul discovery).

``DirectFetcher`` holds the client's HTTP session; ``get`` sends the
signed headers exactly as given and sorts what S3 answers into three:
the body (``DirectBody``, read like a Download call), the object changed
or went since it was described (``ObjectChanged``: ask the server again),
or S3 cannot be used from here (``DirectUnavailable``: a connection
failure, a timeout, any other HTTP status; fall back to the gateway).
The URL is a bearer credential: it is never put in an error or a log."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import aiohttp
import grpc
import yarl

from blobgate.client.errors import BlobgateError
from blobgate.v1 import storage_pb2

READ_SIZE = 1024 * 1024  # the most bytes one read returns, as a Download message
_CHANGED = frozenset({404, 412})  # gone, or no longer the ETag the URL pins


class DirectUnavailable(Exception):
    """S3 cannot be read from here (why, without the URL)."""


class ObjectChanged(Exception):
    """S3 no longer has the object the server described."""


class DirectBody:
    """An open GET of a direct download, read like a Download call:
    ``read`` returns the next bytes (at most ``READ_SIZE``, as a memoryview), then
    ``grpc.aio.EOF``; ``cancel`` closes it. A failure while reading is
    UNAVAILABLE (retryable), and a body that ends early is too; past the
    call's ``deadline`` (a ``time.monotonic()`` value), DEADLINE_EXCEEDED."""

    def __init__(
        self, response: aiohttp.ClientResponse, expected: int, deadline: float | None = None
    ) -> None:
        self._response = response
        self._remaining = expected
        self._expired = _passed(deadline)
        # One timer for the whole body, not a timeout around every read: S3's
        # body arrives in ~7 reads a MiB, and a timeout each cost about as
        # much CPU as the CRC32C check.
        self._watchdog: asyncio.TimerHandle | None = None
        if deadline is not None and not self._expired:
            delay = deadline - time.monotonic()
            self._watchdog = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """The deadline passed: fail the read in progress, or the next one."""
        self._watchdog = None
        self._expired = True
        self._response.content.set_exception(TimeoutError("the download's deadline passed"))

    async def read(self) -> memoryview | Any:
        if self._remaining <= 0:
            self.cancel()
            return grpc.aio.EOF
        try:
            if self._expired:
                raise TimeoutError
            data = await self._response.content.read(min(READ_SIZE, self._remaining))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.cancel()
            if self._expired:
                raise _deadline_passed() from None
            raise BlobgateError(
                grpc.StatusCode.UNAVAILABLE, f"reading from S3 failed: {type(exc).__name__}"
            ) from None
        if not data:
            self.cancel()
            raise BlobgateError(
                grpc.StatusCode.UNAVAILABLE,
                f"S3 ended the body {self._remaining} bytes early",
            )
        self._remaining -= len(data)
        return memoryview(data)  # as the client's Download stub gives data

    def cancel(self) -> bool:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._remaining > 0:
            self._response.close()  # unread bytes: the connection cannot be reused
        else:
            self._response.release()
        return True


class DirectFetcher:
    """The HTTP session of a client's direct downloads, opened on first use
    in the running loop and closed with the client."""

    def __init__(self, connect_timeout: float, read_timeout: float = 60.0) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,  # the stored bytes, as they are
                # aiohttp's default read buffer (64 KiB), as aiobotocore's: a
                # 2 MiB one measured no faster.
                trust_env=False,  # the URL names S3: no proxy settings in between
            )
        return self._session

    async def get(
        self, direct: storage_pb2.DirectDownload, expected: int, deadline: float | None = None
    ) -> DirectBody:
        """Start the GET of ``direct`` for ``expected`` bytes, within the
        call's ``deadline`` (a ``time.monotonic()`` value; None: none)."""
        session = self._open_session()
        url = yarl.URL(direct.url, encoded=True)  # as signed: no re-quoting
        timeout = asyncio.timeout_at(_loop_time(deadline))
        try:
            async with timeout:
                response = await session.get(
                    url, headers=dict(direct.headers), allow_redirects=False
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if timeout.expired() or _passed(deadline):
                raise _deadline_passed() from None
            raise DirectUnavailable(f"S3 could not be reached: {type(exc).__name__}") from None
        if response.status in (200, 206):
            length = response.content_length
            if length is not None and length != expected:
                response.release()
                raise DirectUnavailable(f"S3 answered {length} bytes, not {expected}")
            return DirectBody(response, expected, deadline)
        response.release()
        if response.status in _CHANGED:
            raise ObjectChanged(f"S3 answered {response.status}")
        raise DirectUnavailable(f"S3 answered HTTP {response.status}")

    async def put(self, url: str, headers: dict[str, str], body: bytes) -> None:
        """PUT ``body`` to a presigned part URL with its signed headers;
        DirectUnavailable unless S3 answers 200 (why, without the URL)."""
        session = self._open_session()
        try:
            async with session.put(
                yarl.URL(url, encoded=True),
                data=io.BytesIO(body),  # raw bytes this big warn of blocking the loop
                headers=headers,
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DirectUnavailable(f"S3 could not be reached: {type(exc).__name__}") from None
        if status != 200:
            raise DirectUnavailable(f"S3 answered HTTP {status} to a part")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            await asyncio.sleep(0)  # let aiohttp's transports close


def _deadline_passed() -> BlobgateError:
    return BlobgateError(grpc.StatusCode.DEADLINE_EXCEEDED, "the download's deadline passed")


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _loop_time(deadline: float | None) -> float | None:
    """A ``time.monotonic()`` deadline on the running loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


__all__ = ["DirectBody", "DirectFetcher", "DirectUnavailable", "ObjectChanged"]
