"""A blocking twin of ``Client`` for code without an event loop.

    with SyncClient("127.0.0.1:50051") as client:
        client.upload("reports/q1.csv", Path("q1.csv"))
        for chunk in client.download("reports/q1.csv"):
            ...

Each ``SyncClient`` runs one ``Client`` on a private event loop in a
background thread and waits for its calls, so retries, Consul discovery and
errors (``BlobgateError``) are exactly those of the async client. Its
methods may be called from several threads at once. Progress callbacks run
on the client's loop thread: they should be quick and must not call back
into the client.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, Unpack

from blobgate.client.client import Client
from blobgate.client.download import DownloadStream
from blobgate.client.loop_thread import LoopThread
from blobgate.client.models import ObjectInfo
from blobgate.client.options import ClientOptions, OptionKeywords
from blobgate.client.progress import Progress
from blobgate.client.sources import BinaryReader, UploadSource

SyncUploadSource = UploadSource | Iterable[bytes]
"""What ``SyncClient.upload`` accepts: anything ``Client.upload`` does, or a
plain iterable of byte chunks (read in the caller's place, one at a time)."""

P = ParamSpec("P")
T = TypeVar("T")


class SyncDownloadStream:
    """An open download: ``info`` describes the object, iterating yields its
    bytes (see ``DownloadStream``). Close it (or use ``with``) to cancel a
    download that is not read to the end."""

    def __init__(self, runner: LoopThread, stream: DownloadStream) -> None:
        self._runner = runner
        self._stream = stream
        self.info = stream.info

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        chunk = self._runner.run(_next_chunk(self._stream))
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Cancel the call unless it already ended; safe to call more than once."""
        if self._runner.on_thread():
            # Garbage collection of an abandoned stream can land here.
            self._stream.close()
            return
        self._runner.run_unless_stopped(_close_stream(self._stream))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """The ``SyncClient`` method that runs ``Client`` ``method`` on the
    client's loop thread and waits for its result."""

    @functools.wraps(method, assigned=("__name__", "__doc__"))
    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._runner.run(method(self._client, *args, **kwargs))

    call.__qualname__ = f"SyncClient.{method.__name__}"
    return call


def _stream_opener(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, DownloadStream]],
) -> Callable[Concatenate[SyncClient, P], SyncDownloadStream]:
    """As ``_blocking``, for a ``Client`` method that opens a download: the
    stream it returns is wrapped for iterating from the caller's thread."""
    opened = _blocking(method)

    @functools.wraps(opened, assigned=("__name__", "__qualname__", "__doc__"))
    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> SyncDownloadStream:
        return SyncDownloadStream(self._runner, opened(self, *args, **kwargs))

    return call


class SyncClient:
    """A blocking connection to blobgate: a target string, ``options`` and
    keywords as for ``Client``."""

    def __init__(
        self,
        target: str,
        *,
        options: ClientOptions | None = None,
        **keywords: Unpack[OptionKeywords],
    ) -> None:
        settings = ClientOptions.build(options, keywords)
        self._runner = LoopThread()

        async def create() -> Client:
            # Inside the loop, so the channels and the Consul watch belong to it.
            return Client(target, options=settings)

        try:
            self._client = self._runner.run(create())
        except BaseException:
            self._runner.stop()
            raise
        self.target = target
        self.options = settings

    @property
    def instances(self) -> tuple[str, ...]:
        """The addresses new calls go to (see ``Client.instances``)."""
        return self._client.instances

    def call_counts(self) -> dict[str, int]:
        """Calls started per instance address since the client was created
        (an attempt that could not connect started none)."""
        return self._client.call_counts()

    def close(self) -> None:
        """Close the channels (cancelling calls still running) and stop the
        loop thread; safe to call more than once."""
        if self._runner.stopped:
            return
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def upload(
        self,
        key: str,
        source: SyncUploadSource,
        *,
        bucket: str = "",
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str = "",
        size: int | None = None,
        progress: Progress | None = None,
        resumable: bool | None = None,
        tags: Mapping[str, str] | None = None,
        storage_class: str = "",
        expire_days: int = 0,
    ) -> ObjectInfo:
        """Store ``source`` as ``key`` (see ``Client.upload``); a plain
        iterable of chunks is sent like an async one."""
        if isinstance(source, Iterable) and not isinstance(
            source, bytes | bytearray | memoryview | str | BinaryReader
        ):
            source = _from_iterable(source)
        return self._runner.run(
            self._client.upload(
                key,
                source,
                bucket=bucket,
                content_type=content_type,
                metadata=metadata,
                if_none_match=if_none_match,
                if_match=if_match,
                size=size,
                progress=progress,
                resumable=resumable,
                tags=tags,
                storage_class=storage_class,
                expire_days=expire_days,
            )
        )

    def download(
        self,
        key: str,
        *,
        bucket: str = "",
        offset: int = 0,
        limit: int = 0,
        if_match: str = "",
        progress: Progress | None = None,
        version_id: str = "",
    ) -> Iterator[bytes]:
        """Yield the bytes of ``key`` in chunks of at most 1 MiB (see
        ``Client.download``); the call starts at the first ``next``."""
        with self.open_download(
            key,
            bucket=bucket,
            offset=offset,
            limit=limit,
            if_match=if_match,
            progress=progress,
            version_id=version_id,
        ) as stream:
            yield from stream

    def list(
        self,
        prefix: str = "",
        *,
        bucket: str = "",
        delimiter: str = "",
        page_size: int = 0,
        versions: bool = False,
    ) -> Iterator[ObjectInfo]:
        """Every object (``versions``: every version) under ``prefix``, page
        after page (fetched as the iteration reaches them)."""
        token = ""
        while True:
            page = self.list_page(
                prefix,
                bucket=bucket,
                delimiter=delimiter,
                page_size=page_size,
                page_token=token,
                versions=versions,
            )
            yield from page.objects
            token = page.next_page_token
            if not token:
                return

    # The calls that only forward their arguments: Client's own signatures and
    # docstrings, blocking.
    open_download = _stream_opener(Client.open_download)
    download_to = _blocking(Client.download_to)
    stat = _blocking(Client.stat)
    set_tags = _blocking(Client.set_tags)
    list_page = _blocking(Client.list_page)
    presign = _blocking(Client.presign)
    delete = _blocking(Client.delete)
    copy = _blocking(Client.copy)
    restore = _blocking(Client.restore)
    batch_delete = _blocking(Client.batch_delete)


async def _next_chunk(stream: DownloadStream) -> bytes | None:
    """The stream's next chunk, None at its end."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


async def _close_stream(stream: DownloadStream) -> None:
    stream.close()


async def _from_iterable(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a plain iterable, each taken in a worker thread (it may block)."""
    iterator = iter(chunks)
    done = object()
    while (chunk := await asyncio.to_thread(next, iterator, done)) is not done:
        assert isinstance(chunk, bytes | bytearray | memoryview)
        yield bytes(chunk)
