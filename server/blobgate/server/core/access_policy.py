"""Rights: which caller may do what, where, from the ``auth_policy_file``.

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

The file is read at start-up (an unusable one stops it), again when it
changes (a ``stat`` at most once a second, by a call and by ``watch``, which
the gateway runs, so a broken replacement is reported when it is written),
and on ``reload()`` (SIGHUP). A replacement that does not load is logged and
the old rights are kept.

The file is read whole or not at all (``core.whole_files``: once left alone
for SETTLE_SECONDS, unchanged across the read); every grant names its
``prefixes``, so a grant cut short by a slower writer does not load rather
than covering the whole bucket.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import stat
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from blobgate.server.core.principal_names import IdentitySource, grant_principal, identity_source
from blobgate.server.core.reserved_keys import RESERVED_PREFIX
from blobgate.server.core.settings import Settings
from blobgate.server.core.whole_files import Settling, Stamp, Unsettled, read_whole, stamp_of

log = logging.getLogger(__name__)

MAX_POLICY_BYTES = 1024 * 1024
MAX_NAME = 1024  # a principal, bucket or prefix
MAX_PRESIGN_EXPIRY = 7 * 86400  # the server's own maximum
ANY_PRINCIPAL = "*"
# How often (seconds) a decision may look at the policy file's stamp.
RELOAD_CHECK_INTERVAL = 1.0
# How often (seconds) the watcher looks, calls or not.
WATCH_INTERVAL = 1.0
# How long (seconds) a changed file must be left alone before it is read.
SETTLE_SECONDS = 1.0
# How long start-up waits for a file that keeps changing.
START_UP_WAIT = 10.0


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


def _label() -> str:
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


def _stamp(path: Path) -> Stamp:
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
        stamp = _stamp(path)
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
        raise PolicyChanging(f"bad setting {_label()}: {exc}") from None
    except PolicyError as exc:
        raise PolicyError(f"bad setting {_label()}: {exc}") from None


class AccessPolicy:
    """The rights in force. Without a file every caller may do everything;
    with one, ``allows`` answers from the current rules, picking up a
    changed file (a ``stat`` at most every RELOAD_CHECK_INTERVAL seconds)
    once it has settled."""

    def __init__(self, path: Path | None, source: IdentitySource | None = None) -> None:
        self.path = path
        self.source = source
        self._lock = threading.Lock()
        self._rules: Rules | None = None
        self._stamp: Stamp | None = None
        self._failed: Stamp | None = None
        self._settling = Settling()
        self._checked = time.monotonic()
        self.reloads = 0
        if path is not None:
            self._rules, self._stamp = self._load_at_start(path)
            log.info("rights: %d grants from %s", len(self._rules.grants), path)

    def _load_at_start(self, path: Path) -> tuple[Rules, Stamp]:
        """The first rules, read once the file has settled (waiting for it
        up to START_UP_WAIT seconds)."""
        deadline = time.monotonic() + START_UP_WAIT
        while True:
            if self._settling.settled(_stamp(path), SETTLE_SECONDS):
                try:
                    return load_policy(path, self.source)
                except PolicyChanging:
                    pass
            if time.monotonic() >= deadline:
                raise PolicyError(
                    f"bad setting {_label()}: {path} kept changing for {START_UP_WAIT:g}s: "
                    "write it whole (a new file renamed over it)"
                )
            time.sleep(min(0.05, SETTLE_SECONDS))

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        """The policy of ``auth_policy_file``, for the server's identity
        source; warns once when callers are identified but no policy limits
        them."""
        source = identity_source(settings)
        if settings.auth_policy_file is None and source is not None:
            log.warning(
                "no auth_policy_file: every authenticated caller has all rights on the "
                "allowed buckets"
            )
        return cls(settings.auth_policy_file, source)

    @property
    def enforced(self) -> bool:
        """Whether a policy file limits callers."""
        return self.path is not None

    def rules(self) -> Rules | None:
        """The current rules (None: no policy), reloaded if the file changed."""
        if self.path is None:
            return None
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_INTERVAL:
            self._checked = now
            self._reload(force=False)
        return self._rules

    async def watch(self) -> None:
        """Look at the file every WATCH_INTERVAL seconds until cancelled,
        loading it when it changed: a replacement that does not load is
        reported then, not at the next call; a file gone for two looks in a
        row, once."""
        if self.path is None:
            return
        gone = 0
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                _stamp(self.path)
            except PolicyError as exc:
                gone += 1
                if gone == 2:  # not a replacement mid-rename
                    log.warning("policy file gone; keeping the old rights: %s", exc)
                continue
            gone = 0
            self._reload(force=False)

    def reload(self) -> bool:
        """Read the file again whatever its stamp (SIGHUP); whether the
        new rules are in force (else the old ones stay, with a warning; a
        file changed less than SETTLE_SECONDS ago is read by a later look)."""
        if self.path is None:
            log.info("reload asked, but no auth_policy_file is set")
            return False
        return self._reload(force=True)

    def _reload(self, *, force: bool) -> bool:
        assert self.path is not None
        with self._lock:
            try:
                stamp = _stamp(self.path)
            except PolicyError as exc:
                if force:
                    log.warning("policy not reloaded; keeping the old rights: %s", exc)
                return False  # mid-rename, or gone: keep the rules we have
            if not force and stamp in (self._stamp, self._failed):
                return False
            if not self._settling.settled(stamp, SETTLE_SECONDS):
                if force:
                    log.info(
                        "policy file changed less than %gs ago: it is read once it has been "
                        "left alone that long",
                        SETTLE_SECONDS,
                    )
                return False  # being written, perhaps: a later look reads it
            try:
                rules, stamp = load_policy(self.path, self.source)
            except PolicyChanging:
                return False  # written to during the read: a later look reads it
            except PolicyError as exc:
                self._failed = stamp
                log.warning("policy file does not load; keeping the old rights: %s", exc)
                return False
            except Exception:  # never let a reload fail a call or the signal handler
                self._failed = stamp
                log.warning("policy reload failed; keeping the old rights", exc_info=True)
                return False
            self._rules, self._stamp, self._failed = rules, stamp, None
            self.reloads += 1
        log.info("rights reloaded: %d grants from %s", len(rules.grants), self.path)
        return True

    def allows(self, principal: str | None, action: Action, bucket: str, key: str) -> bool:
        """Whether ``principal`` may do ``action`` on ``key`` in ``bucket``
        (for a List, ``key`` is its prefix)."""
        rules = self.rules()
        return rules is None or rules.allows(principal, action, bucket, key)

    def presign_limit(self, principal: str | None, bucket: str, key: str) -> int | None:
        """The longest presign expiry (seconds) allowed on ``key``; None: no presign right."""
        rules = self.rules()
        if rules is None:
            return MAX_PRESIGN_EXPIRY
        return rules.presign_limit(principal, bucket, key)


__all__ = [
    "ANY_PRINCIPAL",
    "AccessPolicy",
    "Action",
    "Grant",
    "PolicyError",
    "Rules",
    "load_policy",
    "parse_policy",
]
