"""Rights: which caller may do what, where, from the ``auth_policy_file``:
the policy in force (``AccessPolicy``). What the file holds (grants) and
reading it are in ``core.policy_file``, whose names are re-exported here.

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
import logging
import threading
import time
from pathlib import Path

from blobgate.server.core.policy_file import (
    ANY_PRINCIPAL,
    MAX_PRESIGN_EXPIRY,
    Action,
    Grant,
    PolicyChanging,
    PolicyError,
    Rules,
    file_stamp,
    load_policy,
    parse_policy,
    setting_label,
)
from blobgate.server.core.principal_names import IdentitySource, identity_source
from blobgate.server.core.settings import Settings
from blobgate.server.core.whole_files import Settling, Stamp

log = logging.getLogger(__name__)

# How often (seconds) a decision may look at the policy file's stamp.
RELOAD_CHECK_INTERVAL = 1.0
# How often (seconds) the watcher looks, calls or not.
WATCH_INTERVAL = 1.0
# How long (seconds) a changed file must be left alone before it is read.
SETTLE_SECONDS = 1.0
# How long start-up waits for a file that keeps changing.
START_UP_WAIT = 10.0


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
            if self._settling.settled(file_stamp(path), SETTLE_SECONDS):
                try:
                    return load_policy(path, self.source)
                except PolicyChanging:
                    pass
            if time.monotonic() >= deadline:
                raise PolicyError(
                    f"bad setting {setting_label()}: {path} kept changing for {START_UP_WAIT:g}s: "
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
                file_stamp(self.path)
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
                stamp = file_stamp(self.path)
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
    "MAX_PRESIGN_EXPIRY",
    "AccessPolicy",
    "Action",
    "Grant",
    "PolicyError",
    "Rules",
    "load_policy",
    "parse_policy",
]
