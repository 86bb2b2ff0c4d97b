"""How the ``blobgate`` command shows things: sizes, times, JSON documents
and the progress bar."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from blobgate.client.cli.progress_bar import ProgressBar
from blobgate.client.models import ObjectInfo, PresignedURL
from blobgate.client.progress import Progress


def human_size(size: int) -> str:
    """``size`` bytes in binary units: 512 B, 1.5 KiB, 12.0 MiB."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    units = ["KiB", "MiB", "GiB", "TiB", "PiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def count(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is one: 1 object, 2 objects."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def object_json(info: ObjectInfo, *, versions: bool = False) -> dict[str, Any]:
    """``info`` as JSON-ready values: times in ISO 8601, checksums in hex;
    ``version_id`` ("" where the bucket is not versioned), and in a versions
    listing ``is_latest`` and ``is_delete_marker``."""
    doc: dict[str, Any] = {
        "bucket": info.bucket,
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "content_type": info.content_type,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None,
        "metadata": info.metadata,
        "sha256": info.sha256.hex() if info.sha256 is not None else None,
        "crc32c": f"{info.crc32c:08x}" if info.crc32c is not None else None,
        "version_id": info.version_id,
        "storage_class": info.storage_class or None,
        "tags": info.tags,
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
    }
    if versions:
        doc["is_latest"] = info.is_latest
        doc["is_delete_marker"] = info.is_delete_marker
    return doc


def presigned_json(presigned: PresignedURL) -> dict[str, Any]:
    """``presigned`` as JSON-ready values, the expiry in ISO 8601."""
    return {
        "url": presigned.url,
        "method": presigned.method,
        "expires_at": presigned.expires_at.isoformat() if presigned.expires_at else None,
        "headers": presigned.headers,
    }


def print_json(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    print(json.dumps(value, ensure_ascii=False))


def modified(info: ObjectInfo) -> str:
    """The object's last-modified time for people, "-" when unknown."""
    return info.last_modified.strftime("%Y-%m-%d %H:%M:%S") if info.last_modified else "-"


@contextlib.contextmanager
def progress_bar(
    args: argparse.Namespace, label: str, *, finishing: str | None = None
) -> Iterator[Progress | None]:
    """A progress bar on stderr if it is a terminal and the user wants one;
    ``finishing`` names what happens once every byte moved (see ProgressBar)."""
    if args.json or args.no_progress or not sys.stderr.isatty():
        yield None
        return
    with ProgressBar(label, sys.stderr, finishing=finishing) as bar:
        yield bar
