"""The ``blobgate`` subcommands for trees: ``put -r``, ``get -r``, ``rm -r``
and ``du``, on ``blobgate.client.trees``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from blobgate.client.cli.commands import PartialFailure, UsageError
from blobgate.client.cli.output import count, human_size, print_json, progress_bar
from blobgate.client.client import Client
from blobgate.client.trees import (
    TreeFailure,
    TreeResult,
    delete_tree,
    download_tree,
    folder_prefix,
    upload_tree,
    usage,
)


def _sized(size: int) -> str:
    return f"{human_size(size)} ({size} bytes)"


def _failure_json(failure: TreeFailure) -> dict[str, Any]:
    code = failure.code.name if failure.code is not None else None
    return {"name": failure.name, "code": code, "message": failure.message}


def _report(args: argparse.Namespace, what: str, result: TreeResult, verb: str) -> None:
    """Print the summary of a tree transfer; PartialFailure if any file failed."""
    line = f"{what}: {count(result.done, 'file')} {verb}, {_sized(result.bytes)}"
    if result.skipped:
        line += f"; {result.skipped} unchanged skipped ({human_size(result.skipped_bytes)})"
    document = {
        "files": result.done,
        "bytes": result.bytes,
        "skipped": result.skipped,
        "skipped_bytes": result.skipped_bytes,
    }
    _finish(args, result, document, line)


def _finish(
    args: argparse.Namespace, result: TreeResult, document: dict[str, Any], line: str
) -> None:
    """Print ``document`` (--json) or ``line``, each with the failures added;
    PartialFailure if there were any."""
    if args.json:
        print_json(
            {
                **document,
                "failed": len(result.failures),
                "failures": [_failure_json(failure) for failure in result.failures],
            }
        )
    else:
        if result.failures:
            line += f"; {len(result.failures)} failed"
        print(line)
    if result.failures:
        raise PartialFailure(result.failures)


async def put_tree(client: Client, args: argparse.Namespace) -> None:
    """Upload a directory under a prefix."""
    if args.local == "-":
        raise UsageError("put -r takes a directory, not stdin")
    directory = Path(args.local)
    prefix = folder_prefix(args.key)
    what = f"put -r {directory} -> {prefix or '(bucket root)'}"
    with progress_bar(args, f"put -r {directory}", finishing="committing") as progress:
        result = await upload_tree(
            client,
            directory,
            prefix,
            jobs=args.jobs,
            progress=progress,
            tags=dict(args.tag),
            storage_class=args.storage_class,
            expire_days=args.expire_days,
        )
    _report(args, what, result, "sent")


async def get_tree(client: Client, args: argparse.Namespace) -> None:
    """Download the objects under a prefix into a directory."""
    if args.local == "-":
        raise UsageError("get -r writes a directory, not stdout")
    directory = Path(args.local)
    prefix = folder_prefix(args.key)
    what = f"get -r {prefix or '(bucket root)'} -> {directory}"
    with progress_bar(args, f"get -r {prefix}") as progress:
        result = await download_tree(client, prefix, directory, jobs=args.jobs, progress=progress)
    _report(args, what, result, "received")


async def rm_tree(client: Client, args: argparse.Namespace) -> None:
    """Delete every object under a prefix."""
    if not args.key:
        raise UsageError("rm -r needs a PREFIX: it never empties a whole bucket")
    prefix = folder_prefix(args.key)
    result = await delete_tree(client, prefix)
    line = f"rm -r {prefix}: {count(result.done, 'object')} deleted, {_sized(result.bytes)}"
    _finish(args, result, {"prefix": prefix, "deleted": result.done, "bytes": result.bytes}, line)


async def du(client: Client, args: argparse.Namespace) -> None:
    """Count the objects and bytes under a prefix."""
    total = await usage(client, args.prefix, delimiter=args.delimiter)
    if args.json:
        document: dict[str, Any] = {
            "prefix": args.prefix,
            "objects": total.objects,
            "bytes": total.bytes,
        }
        if args.delimiter:
            document["groups"] = [
                {"prefix": name, "objects": objects, "bytes": size}
                for name, (objects, size) in sorted(total.groups.items())
            ]
        print_json(document)
        return
    rows = [(name, objects, size) for name, (objects, size) in sorted(total.groups.items())]
    if args.delimiter:
        grouped = sum(objects for _, objects, _ in rows)
        if total.objects > grouped:
            here = total.objects - grouped
            here_bytes = total.bytes - sum(size for _, _, size in rows)
            rows.append((f"{args.prefix or '(bucket root)'} (objects here)", here, here_bytes))
    rows.append(("total", total.objects, total.bytes))
    width = max(len(name) for name, _, _ in rows)
    for name, objects, size in rows:
        noun = "object" if objects == 1 else "objects"
        print(f"{name:<{width}}  {objects:>8} {noun:<7}  {human_size(size):>10}  ({size} bytes)")
