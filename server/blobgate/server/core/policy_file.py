"""The policy file (``auth_policy_file``): the grants it holds, and reading
it into ``Rules``.

The file is TOML, a list of ``[[grant]]`` tables::

    [[grant]]
    principals = ["spiffe://example.org/ns/reports/sa/uploader"]  # or "*": any caller
    buckets = ["reports"]
    prefixes = ["daily/"]          # [""]: the whole bucket
    actions = ["read", "list", "write", "presign"]
    max_presign_expiry = 3600      # optional, seconds

Grants only add rights: a call is allowed when some grant names its
principal, bucket and action and, for a key, one of the grant's prefixes is
a plain string prefix of the key (as S3 IAM matches ``reports/*``); a List
when its prefix starts with one. Nothing else is allowed once a policy is
set. Without a policy file every caller may do everything on the allowed
buckets. A grant names its principals as the server's identity source
spells them (``core.principal_names``): in mTLS mode a name no certificate
can have (a bare DNS name or CN) is refused, saying how to write it.

``load_policy`` reads the file whole or not at all (``core.whole_files``:
unchanged across the read); when it is read again, and what happens to a
replacement that does not load, is ``core.access_policy``'s.
"""

from __future__ import annotations

import enum
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from blobgate.server.core.principal_names import IdentitySource, grant_principal
from blobgate.server.core.reserved_keys import RESERVED_PREFIX
from blobgate.server.core.whole_files import Stamp, Unsettled, read_whole, stamp_of

MAX_POLICY_BYTES = 1024 * 1024
MAX_NAME = 1024  # a principal, bucket or prefix
MAX_PRESIGN_EXPIRY = 7 * 86400  # the server's own maximum
ANY_PRINCIPAL = "*"


class Action(enum.StrEnum):
    """What a grant may allow; each RPC needs one or two of these."""

    READ = "read"  # Download, Stat, a Copy's source, a presigned GET
    LIST = "list"  # List
    WRITE = "write"  # Upload, the resumable RPCs, a Copy's destination, a presigned PUT
    DELETE = "delete"  # Delete, BatchDelete
    PRESIGN = "presign"  # Presign (with read for GET, write for PUT)
    PURGE = "purge"  # Delete or BatchDelete of a version id: removed for good


_KNOWN_ACTIONS = ", ".join(action.value for action in Action)
_FIELDS = frozenset({"principals", "buckets", "prefixes", "actions", "max_presign_expiry"})


class PolicyError(Exception):
    """The policy file is unusable; the message names the file, the grant and the field."""


class PolicyChanging(PolicyError):
    """The policy file changed while it was read: read it again later."""


@dataclass(frozen=True)
class Grant:
    """One ``[[grant]]``: ``prefixes`` None (or ``("",)``) means the whole bucket."""

    principals: frozenset[str]
    buckets: frozenset[str]
    actions: frozenset[Action]
    prefixes: tuple[str, ...] | None = None
    max_presign_expiry: int | None = None

    def names(self, principal: str | None) -> bool:
        if principal is None:
            return False
        return principal in self.principals or ANY_PRINCIPAL in self.principals

    def applies(self, principal: str | None, action: Action, bucket: str, key: str) -> bool:
        """Whether this grant allows ``action`` on ``key`` (or, for a List, on
        every key under the prefix ``key``) in ``bucket``."""
        if action not in self.actions or bucket not in self.buckets:
            return False
        if not self.names(principal):
            return False
        return self.prefixes is None or key.startswith(self.prefixes)


@dataclass(frozen=True)
class Rules:
    """The grants of one version of the policy file."""

    grants: tuple[Grant, ...]

    def allows(self, principal: str | None, action: Action, bucket: str, key: str) -> bool:
        return any(grant.applies(principal, action, bucket, key) for grant in self.grants)

    def presign_limit(self, principal: str | None, bucket: str, key: str) -> int | None:
        """The longest expiry (seconds) a presign right on ``key`` gives:
        the most generous of the grants that give one; None without one."""
        limits = [
            grant.max_presign_expiry or MAX_PRESIGN_EXPIRY
            for grant in self.grants
            if grant.applies(principal, Action.PRESIGN, bucket, key)
        ]
        return max(limits, default=None)


# --- loading ------------------------------------------------------------


def setting_label() -> str:
    return "auth_policy_file (--auth-policy-file / BLOBGATE_AUTH_POLICY_FILE)"


def _strings(
    grant: Mapping[str, object], field: str, where: str, *, empty: bool = False
) -> list[str]:
    value = grant[field]
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where}.{field}: must be a non-empty list of strings")
    for item in value:
        if not isinstance(item, str) or not (item or empty):
            raise PolicyError(f"{where}.{field}: {item!r} is not a non-empty string")
        if len(item) > MAX_NAME or not item.isprintable():
            raise PolicyError(
                f"{where}.{field}: {item[:80]!r} is not printable or longer than {MAX_NAME}"
            )
    return value


def _prefix(prefix: str, where: str) -> str:
    """A granted prefix that keys can have: the key rules of the API."""
    segments = prefix.split("/")[:-1]  # the last one may be the start of a name
    if prefix.startswith("/") or any(segment in {".", ".."} for segment in segments):
        raise PolicyError(
            f"{where}.prefixes: {prefix!r} has a leading '/' or a '.' or '..' segment, "
            "which no key has"
        )
    if prefix.startswith(RESERVED_PREFIX):
        raise PolicyError(f"{where}.prefixes: {prefix!r} reaches the reserved {RESERVED_PREFIX!r}")
    return prefix


def _principals(
    raw: Mapping[str, object], where: str, source: IdentitySource | None
) -> frozenset[str]:
    names = set()
    for name in _strings(raw, "principals", where):
        if name == ANY_PRINCIPAL:
            names.add(name)
            continue
        try:
            names.add(grant_principal(name, source))
        except ValueError as exc:
            raise PolicyError(f"{where}.principals: {exc}") from None
    return frozenset(names)


def _grant(raw: object, index: int, source: IdentitySource | None) -> Grant:
    where = f"grant[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table ([[grant]])")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise PolicyError(
            f"{where}: unknown field {unknown[0]!r}: use principals, buckets, prefixes, "
            "actions, max_presign_expiry"
        )
    for field in ("principals", "buckets", "actions"):
        if field not in raw:
            raise PolicyError(f"{where}.{field}: missing")
    if "prefixes" not in raw:
        raise PolicyError(
            f"{where}.prefixes: missing: list the key prefixes the grant covers, or write "
            'prefixes = [""] for the whole bucket'
        )
    actions = set()
    for name in _strings(raw, "actions", where):
        try:
            actions.add(Action(name))
        except ValueError:
            raise PolicyError(
                f"{where}.actions: unknown action {name!r}: use {_KNOWN_ACTIONS}"
            ) from None
    prefixes = tuple(_prefix(p, where) for p in _strings(raw, "prefixes", where, empty=True))
    expiry = raw.get("max_presign_expiry")
    if expiry is not None and (
        not isinstance(expiry, int)
        or isinstance(expiry, bool)
        or not 1 <= expiry <= MAX_PRESIGN_EXPIRY
    ):
        raise PolicyError(
            f"{where}.max_presign_expiry: must be whole seconds from 1 to {MAX_PRESIGN_EXPIRY}"
        )
    return Grant(
        principals=_principals(raw, where, source),
        buckets=frozenset(_strings(raw, "buckets", where)),
        actions=frozenset(actions),
        prefixes=prefixes,
        max_presign_expiry=expiry,
    )


def parse_policy(text: str, source: IdentitySource | None = None) -> Rules:
    """The rules of a policy document for a server whose principals come
    from ``source`` (None: any spelling); PolicyError naming the grant and
    field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not TOML: {exc}") from None
    unknown = sorted(set(document) - {"grant"})
    if unknown:
        raise PolicyError(f"unknown table or key {unknown[0]!r}: the file holds [[grant]] tables")
    grants = document.get("grant", [])
    if not isinstance(grants, list):
        raise PolicyError("grant: must be a list of tables ([[grant]], two brackets)")
    return Rules(tuple(_grant(raw, index, source) for index, raw in enumerate(grants)))


def file_stamp(path: Path) -> Stamp:
    try:
        info = path.stat()
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise PolicyError(f"{path} is not a regular file")
    return stamp_of(info)


def load_policy(path: Path, source: IdentitySource | None = None) -> tuple[Rules, Stamp]:
    """The rules of the policy file and the stamp of what was read, for a
    server whose principals come from ``source``; PolicyError naming the
    setting, the file, the grant and the field (PolicyChanging when the file
    changed during the read)."""
    try:
        stamp = file_stamp(path)
        try:
            data = read_whole(path, stamp, MAX_POLICY_BYTES)
        except OSError as exc:
            raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
        except Unsettled as exc:
            raise PolicyChanging(str(exc)) from None
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(f"{path} is larger than 1MiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"{path} is not UTF-8") from None
        try:
            return parse_policy(text, source), stamp
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None
    except PolicyChanging as exc:
        raise PolicyChanging(f"bad setting {setting_label()}: {exc}") from None
    except PolicyError as exc:
        raise PolicyError(f"bad setting {setting_label()}: {exc}") from None
