"""The subcommands of ``blobgate``: each takes the client and the parsed
command line, and prints its result."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from blobgate.client.cli.output import (
    human_size,
    modified,
    object_json,
    presigned_json,
    print_json,
    progress_bar,
)
from blobgate.client.client import Client
from blobgate.client.errors import BlobgateError
from blobgate.client.models import ObjectInfo
from blobgate.client.trees import TreeFailure, key_name

Command = Callable[[Client, argparse.Namespace], Awaitable[None]]


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see."""


class PartialFailure(Exception):
    """Some files or keys of a command failed (the rest succeeded): each
    with its status code, None for a local failure."""

    def __init__(self, failures: Sequence[TreeFailure]) -> None:
        super().__init__(f"{len(failures)} failed")
        self.failures = list(failures)


async def put(client: Client, args: argparse.Namespace) -> None:
    """Upload a file, or stdin."""
    source = sys.stdin.buffer if args.local == "-" else Path(args.local)
    with progress_bar(args, f"put {args.key}", finishing="committing") as progress:
        info = await client.upload(
            args.key,
            source,
            content_type=args.content_type,
            metadata=dict(args.metadata),
            if_none_match=args.if_none_match,
            if_match=args.if_match,
            progress=progress,
            tags=dict(args.tag),
            storage_class=args.storage_class,
            expire_days=args.expire_days,
        )
    if args.json:
        print_json(object_json(info))
    else:
        print(f"put {info.key}: {human_size(info.size)}, etag {info.etag}")


async def get(client: Client, args: argparse.Namespace) -> None:
    """Download an object to a file, a directory or stdout."""
    options: dict[str, Any] = {
        "offset": args.offset,
        "limit": args.limit,
        "if_match": args.if_match,
        "version_id": args.version_id,
    }
    if args.local == "-":
        out = sys.stdout.buffer
        with progress_bar(args, f"get {args.key}") as progress:
            async for chunk in client.download(args.key, progress=progress, **options):
                out.write(chunk)
            out.flush()
        return
    target = Path(args.local)
    if await asyncio.to_thread(target.is_dir):
        name = PurePosixPath(args.key).name
        if not name:
            raise UsageError(f"{args.key!r} has no file name: give LOCAL as a file path")
        target /= name
    with progress_bar(args, f"get {args.key}") as progress:
        info = await client.download_to(args.key, target, progress=progress, **options)
    if args.json:
        print_json(object_json(info))
    else:
        print(f"get {info.key}: {human_size(info.size)} -> {target}")


async def cat(client: Client, args: argparse.Namespace) -> None:
    """Write an object to stdout."""
    args.local, args.no_progress = "-", True
    await get(client, args)


async def ls(client: Client, args: argparse.Namespace) -> None:
    """List the objects (or every version, ``--versions``) and common
    prefixes under a prefix."""
    token = ""
    while True:
        page = await client.list_page(
            args.prefix,
            delimiter=args.delimiter,
            page_size=args.page_size,
            page_token=token,
            versions=args.versions,
        )
        for prefix in page.common_prefixes:
            if args.json:
                print_json({"prefix": prefix})
            elif args.long:
                print(f"{'PRE':>10}  {'':19}  {prefix}")
            else:
                print(prefix)
        for info in page.objects:
            if args.json:
                print_json(object_json(info, versions=args.versions))
            elif args.versions:
                print(version_line(info, long=args.long))
            elif args.long:
                print(f"{human_size(info.size):>10}  {modified(info):19}  {info.key}")
            else:
                print(info.key)
        token = page.next_page_token
        if not token:
            return


async def stat(client: Client, args: argparse.Namespace) -> None:
    """Describe an object."""
    info = await client.stat(args.key, include_tags=args.tags, version_id=args.version_id)
    if args.json:
        print_json(object_json(info))
        return
    rows = [
        ("bucket", info.bucket),
        ("key", info.key),
        ("size", f"{human_size(info.size)} ({info.size} bytes)"),
        ("etag", info.etag),
        ("content-type", info.content_type),
        ("last-modified", modified(info)),
        ("sha256", info.sha256.hex() if info.sha256 is not None else "-"),
        ("crc32c", f"{info.crc32c:08x}" if info.crc32c is not None else "-"),
        ("version-id", info.version_id or "-"),
        ("storage-class", info.storage_class or "-"),
        ("expires", info.expires_at.isoformat() if info.expires_at else "-"),
    ]
    rows += [(f"metadata {name}", value) for name, value in sorted(info.metadata.items())]
    rows += [(f"tag {name}", value) for name, value in sorted(info.tags.items())]
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        print(f"{name + ':':<{width}} {value}")


async def presign(client: Client, args: argparse.Namespace) -> None:
    """Print a URL for a plain HTTP client."""
    presigned = await client.presign(
        args.key, method=args.method, expires_in=args.expires, content_type=args.content_type
    )
    if args.json:
        print_json(presigned_json(presigned))
        return
    print(presigned.url)
    for name, value in sorted(presigned.headers.items()):
        # stderr, so that "$(blobgate presign KEY)" is the URL alone.
        print(f"blobgate: send header '{name}: {value}' with this URL", file=sys.stderr)


async def rm(client: Client, args: argparse.Namespace) -> None:
    """Delete an object (a missing one is not an error: it is gone either way)."""
    done = await client.delete(args.key, if_match=args.if_match, version_id=args.version_id)
    if args.json:
        doc: dict[str, Any] = {"key": args.key, "deleted": True}
        if done.version_id:  # a versioned bucket: the marker left, or the version removed
            doc.update(version_id=done.version_id, delete_marker=done.delete_marker)
        print_json(doc)
    elif args.version_id:
        print(f"rm {args.key}: version {args.version_id} removed for good")
    elif done.delete_marker:
        print(f"rm {args.key}: deleted (delete marker {done.version_id}; see ls --versions)")
    else:
        print(f"rm {args.key}: deleted")


def _destination(source: str, destination: str) -> str:
    """DST, or DST + the source's file name when DST ends with "/"."""
    return destination + key_name(source) if destination.endswith("/") else destination


def _copy_line(verb: str, source: str, info: ObjectInfo) -> str:
    return f"{verb} {source} -> {info.bucket}/{info.key}: {human_size(info.size)}, etag {info.etag}"


async def cp(client: Client, args: argparse.Namespace) -> None:
    """Copy an object inside the server's S3."""
    replace = bool(args.content_type or args.metadata)
    info = await client.copy(
        args.source,
        _destination(args.source, args.destination),
        to_bucket=args.to_bucket,
        source_if_match=args.source_if_match,
        source_version_id=args.version_id,
        if_none_match=args.if_none_match,
        if_match=args.if_match,
        replace_metadata=replace,
        content_type=args.content_type,
        metadata=dict(args.metadata),
        storage_class=args.storage_class,
        replace_tags=args.replace_tags or bool(args.tag),
        tags=dict(args.tag),
        expire_days=args.expire_days,
    )
    if args.json:
        print_json(object_json(info))
    else:
        print(_copy_line("cp", args.source, info))


async def tag(client: Client, args: argparse.Namespace) -> None:
    """Replace an object's tags (none given: remove them; its lifetime stays)."""
    info = await client.set_tags(args.key, dict(args.tags), if_match=args.if_match)
    if args.json:
        print_json(object_json(info))
        return
    shown = ", ".join(f"{name}={value}" for name, value in sorted(info.tags.items()))
    print(f"tag {info.key}: {shown or '(no tags)'}")


async def mv(client: Client, args: argparse.Namespace) -> None:
    """Copy an object, then delete the source if it is still the version copied."""
    source = await client.stat(args.source)
    info = await client.copy(
        args.source,
        _destination(args.source, args.destination),
        to_bucket=args.to_bucket,
        source_if_match=source.etag,
        if_none_match=args.if_none_match,
        if_match=args.if_match,
    )
    try:
        await client.delete(args.source, if_match=source.etag)
    except BlobgateError as exc:
        why = ""
        if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
            why = " (it changed or went away after the copy, so it was left as it is)"
        raise BlobgateError(
            exc.code,
            f"copied to {info.bucket}/{info.key}, but {args.source} was not deleted: "
            f"{exc.message}{why}",
        ) from exc
    if args.json:
        print_json(object_json(info))
    else:
        print(_copy_line("mv", args.source, info))


async def restore(client: Client, args: argparse.Namespace) -> None:
    """Make an earlier version of a key its current one (a copy of that
    version onto the key, itself a new version)."""
    info = await client.restore(args.key, args.version_id)
    if args.json:
        print_json(object_json(info))
    else:
        print(
            f"restore {args.key}: version {args.version_id} is current again "
            f"as version {info.version_id or '-'}, {human_size(info.size)}"
        )


def version_line(info: ObjectInfo, *, long: bool) -> str:
    """One line of ``ls --versions``: the version id, whether it is the
    latest, a delete marker; with ``long``, size and time."""
    mark = "*" if info.is_latest else " "
    what = "(delete marker)" if info.is_delete_marker else ""
    line = f"{mark} {info.version_id}  {info.key} {what}".rstrip()
    if long:
        size = "-" if info.is_delete_marker else human_size(info.size)
        return f"{size:>10}  {modified(info):19}  {line}"
    return line
