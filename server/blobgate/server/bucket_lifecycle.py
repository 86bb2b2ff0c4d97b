"""The gateway's bucket lifecycle rules written at start-up (the
manage-lifecycle setting): once, from the first health probe on (so after
the buckets were created), and again at the next probe while S3 refuses.
A refusal is logged, not fatal: objects are still served, only S3 does not
expire them until the rules are in place."""

from __future__ import annotations

import logging

from blobgate.server.core.errors import ServiceError
from blobgate.server.core.settings import Settings
from blobgate.server.storage.protocols import Backend

log = logging.getLogger(__name__)


class LifecycleOnce:
    """Reconciles ``buckets``' lifecycle rules until it once succeeded."""

    def __init__(self, backend: Backend, settings: Settings, buckets: list[str]) -> None:
        self._backend = backend
        self._buckets = buckets
        self._expiry_days = settings.expiry_days_allowed
        self._rules = settings.lifecycle_rules
        self.done = not settings.manage_lifecycle

    async def reconcile(self) -> None:
        if self.done:
            return
        try:
            await self._backend.reconcile_lifecycle(self._buckets, self._expiry_days, self._rules)
        except ServiceError as exc:
            log.error(
                "could not write the gateway's bucket lifecycle rules (%s); objects given "
                "expire_days will not expire until they are in place: retrying at the next "
                "health probe",
                exc,
            )
            return
        self.done = True
