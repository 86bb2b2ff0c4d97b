"""Whole trees of objects: a local directory uploaded under a prefix or a
prefix downloaded into a directory (in parallel, skipping files whose size
and sha256 already match), every key under a prefix deleted, and the count
and bytes under a prefix. The ``blobgate`` command's ``-r`` forms and ``du``
are built on these.

A tree's prefix names a folder: ``photos`` and ``photos/`` both mean the keys
under ``photos/``; the empty prefix means the whole bucket.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import grpc

from blobgate.client.client import Client
from blobgate.client.errors import BlobgateError
from blobgate.client.models import ObjectInfo
from blobgate.client.progress import Progress

_HASH_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class TreeFailure:
    """One file or key that failed: ``code`` is the call's status, None for
    a local failure (a file that cannot be read or written)."""

    name: str
    code: grpc.StatusCode | None
    message: str


@dataclass
class TreeResult:
    """What a tree transfer or delete did."""

    done: int = 0  # files transferred, or keys deleted
    bytes: int = 0  # bytes transferred
    skipped: int = 0  # files already the same on both sides
    skipped_bytes: int = 0
    failures: list[TreeFailure] = field(default_factory=list)


@dataclass
class Usage:
    """Objects and bytes under a prefix; with a delimiter, ``groups`` maps
    each common prefix one level down to its (objects, bytes)."""

    objects: int = 0
    bytes: int = 0
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)


def folder_prefix(prefix: str) -> str:
    """``prefix`` as a folder: empty, or ending with "/"."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True)
class LocalFile:
    path: Path
    relative: str  # below the directory, in POSIX form
    size: int


def local_files(directory: Path) -> list[LocalFile]:
    """The regular files under ``directory`` (symbolic links to directories
    are not followed), sorted by their relative names (blocking)."""
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    found: list[LocalFile] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            if path.is_file():
                relative = path.relative_to(directory).as_posix()
                found.append(LocalFile(path, relative, path.stat().st_size))
    return sorted(found, key=lambda item: item.relative)


def sha256_of(path: Path) -> bytes:
    """The SHA-256 of a file's bytes (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.digest()


def local_path(directory: Path, relative: str) -> Path:
    """Where a key's name below the prefix goes under ``directory``;
    ValueError for a name that would land elsewhere or is no file name."""
    parts = relative.split("/")
    if not relative or any(part in {"", ".", ".."} for part in parts) or "\x00" in relative:
        raise ValueError(f"{relative!r} is not a safe relative file name")
    return directory.joinpath(*parts)


class _Totals:
    """One progress report for many transfers: the sum of each file's bytes."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self._progress = progress
        self._done = 0
        self._per_file: dict[str, int] = {}

    def report(self) -> None:
        if self._progress is not None:
            self._progress(self._done, self.total)

    def advance(self, name: str, done: int) -> None:
        self._done += done - self._per_file.get(name, 0)
        self._per_file[name] = done
        self.report()

    def file(self, name: str) -> Progress:
        return lambda done, _total: self.advance(name, done)

    def drop(self, name: str, size: int) -> None:
        """A failed file counts neither in the bytes done nor in the total."""
        self._done -= self._per_file.pop(name, 0)
        self.total -= size
        self.report()


def _failure(name: str, exc: BaseException) -> TreeFailure:
    if isinstance(exc, BlobgateError):
        return TreeFailure(name, exc.code, exc.message)
    if isinstance(exc, OSError):
        return TreeFailure(name, None, exc.strerror or str(exc))
    return TreeFailure(name, None, str(exc))


async def _run_all(jobs: int, tasks: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run ``tasks`` with at most ``jobs`` at once."""
    queue = list(reversed(tasks))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(jobs, len(tasks)))):
            group.create_task(worker())


async def _listing(client: Client, prefix: str, bucket: str) -> list[ObjectInfo]:
    return [info async for info in client.list(prefix, bucket=bucket)]


async def _same_content(client: Client, key: str, bucket: str, path: Path) -> bool:
    """Whether the stored object's sha256 is the file's (sizes already match)."""
    stored = await client.stat(key, bucket=bucket)
    if stored.sha256 is None:
        return False
    return await asyncio.to_thread(sha256_of, path) == stored.sha256


async def upload_tree(
    client: Client,
    directory: Path,
    prefix: str,
    *,
    bucket: str = "",
    jobs: int = 4,
    progress: Progress | None = None,
    skip_unchanged: bool = True,
    tags: Mapping[str, str] | None = None,
    storage_class: str = "",
    expire_days: int = 0,
) -> TreeResult:
    """Upload every file under ``directory`` as ``prefix`` + its relative
    path, ``jobs`` at a time, each with ``tags``, ``storage_class`` and
    ``expire_days`` (see ``Client.upload``). With ``skip_unchanged``, a file whose size and
    sha256 match the stored object is not sent again. A file that fails is
    in ``failures``; the others go on."""
    prefix = folder_prefix(prefix)
    files = await asyncio.to_thread(local_files, directory)
    stored = {info.key: info.size for info in await _listing(client, prefix, bucket)}
    totals = _Totals(sum(file.size for file in files), progress)
    result = TreeResult()

    async def send(file: LocalFile) -> None:
        path, relative, size = file.path, file.relative, file.size
        key = prefix + relative
        try:
            if (
                skip_unchanged
                and stored.get(key) == size
                and await _same_content(client, key, bucket, path)
            ):
                result.skipped += 1
                result.skipped_bytes += size
                totals.advance(relative, size)
                return
            await client.upload(
                key,
                path,
                bucket=bucket,
                progress=totals.file(relative),
                tags=tags,
                storage_class=storage_class,
                expire_days=expire_days,
            )
        except (BlobgateError, OSError) as exc:
            result.failures.append(_failure(str(path), exc))
            totals.drop(relative, size)
            return
        totals.advance(relative, size)
        result.done += 1
        result.bytes += size

    totals.report()
    await _run_all(jobs, [functools.partial(send, file) for file in files])
    result.failures.sort(key=lambda failure: failure.name)
    return result


async def download_tree(
    client: Client,
    prefix: str,
    directory: Path,
    *,
    bucket: str = "",
    jobs: int = 4,
    progress: Progress | None = None,
    skip_unchanged: bool = True,
) -> TreeResult:
    """Download every object under ``prefix`` to ``directory`` + its name
    below the prefix, ``jobs`` at a time, each file written atomically (a
    temporary file renamed into place once verified). With
    ``skip_unchanged``, a file whose size and sha256 match the object is not
    fetched again. Keys ending in "/" (folder markers) are left out."""
    prefix = folder_prefix(prefix)
    objects = [
        info for info in await _listing(client, prefix, bucket) if not info.key.endswith("/")
    ]
    totals = _Totals(sum(info.size for info in objects), progress)
    result = TreeResult()

    async def fetch(info: ObjectInfo) -> None:
        relative = info.key[len(prefix) :]
        try:
            target = local_path(directory, relative)
            if (
                skip_unchanged
                and await asyncio.to_thread(target.is_file)
                and (await asyncio.to_thread(target.stat)).st_size == info.size
                and await _same_content(client, info.key, bucket, target)
            ):
                result.skipped += 1
                result.skipped_bytes += info.size
                totals.advance(relative, info.size)
                return
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            await client.download_to(
                info.key,
                target,
                bucket=bucket,
                if_match=info.etag,
                progress=totals.file(relative),
            )
        except (BlobgateError, OSError, ValueError) as exc:
            result.failures.append(_failure(info.key, exc))
            totals.drop(relative, info.size)
            return
        totals.advance(relative, info.size)
        result.done += 1
        result.bytes += info.size

    totals.report()
    await _run_all(jobs, [functools.partial(fetch, info) for info in objects])
    result.failures.sort(key=lambda failure: failure.name)
    return result


async def delete_tree(client: Client, prefix: str, *, bucket: str = "") -> TreeResult:
    """Delete every object under ``prefix`` with BatchDelete, 1000 keys a
    call; ``done`` counts the keys deleted, ``bytes`` their sizes."""
    objects = await _listing(client, folder_prefix(prefix), bucket)
    sizes = {info.key: info.size for info in objects}
    result = TreeResult()
    for outcome in await client.batch_delete(list(sizes), bucket=bucket):
        if outcome.deleted:
            result.done += 1
            result.bytes += sizes[outcome.key]
        else:
            result.failures.append(TreeFailure(outcome.key, outcome.code, outcome.message))
    return result


async def usage(
    client: Client, prefix: str = "", *, bucket: str = "", delimiter: str = ""
) -> Usage:
    """Count the objects and bytes whose keys start with ``prefix``; with a
    ``delimiter``, also per common prefix one level down."""
    total = Usage()
    async for info in client.list(prefix, bucket=bucket):
        total.objects += 1
        total.bytes += info.size
        if not delimiter:
            continue
        cut = info.key.find(delimiter, len(prefix))
        if cut < 0:
            continue
        group = info.key[: cut + len(delimiter)]
        objects, size = total.groups.get(group, (0, 0))
        total.groups[group] = (objects + 1, size + info.size)
    return total


def key_name(key: str) -> str:
    """The last segment of a key: its file name."""
    return PurePosixPath(key).name
