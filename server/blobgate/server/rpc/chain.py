"""The StorageService's interceptor chain, built in one function: the one
place that says in which order the interceptors run, and why."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from blobgate.server.core.settings import Settings
from blobgate.server.rpc.access_log import AccessLogInterceptor
from blobgate.server.rpc.admission import AdmissionInterceptor, storage_call
from blobgate.server.rpc.audit import AuditInterceptor
from blobgate.server.rpc.authentication import AuthenticationInterceptor
from blobgate.server.rpc.metrics import MetricsInterceptor, RpcMetrics
from blobgate.server.rpc.status_codes import ErrorInterceptor
from blobgate.server.rpc.tracing import TracingInterceptor
from blobgate.server.rpc.unary_limits import UnaryLimitInterceptor


def interceptor_chain(
    settings: Settings,
    *,
    registry: CollectorRegistry | None,
    authentication: AuthenticationInterceptor | None,
    traced: bool,
) -> list[grpc.aio.ServerInterceptor]:
    """The gateway server's interceptors, outermost first: gRPC runs each
    one's part around all that follow it, the handler innermost. Three are
    optional: metrics (with a ``registry``, i.e. ``metrics_listen`` set),
    authentication (when the server has an identity source) and tracing
    (``traced``: a tracer provider was set). Before any of them, gRPC itself
    refuses calls past ``max_calls + max_anonymous_calls`` (admission keeps
    the total under that). An interceptor's part runs twice: once from the
    call's headers, before its request is read (``intercept_service``:
    admission and the bearer token's check decide there), and once around
    the handler.

    1. ``AdmissionInterceptor``: outermost, so it decides before anything
       else runs, from the headers alone: identified calls take
       ``max_calls``, calls without an identity (health, reflection, a
       StorageService call without a valid bearer token) their own
       ``max_anonymous_calls``; a call past its share is refused
       (RESOURCE_EXHAUSTED) without its message being read, and reaches no
       other interceptor, like gRPC's own refusals. A health call must
       deliver its request within ``anonymous_request_timeout``.
    2. ``MetricsInterceptor``: every admitted call is counted and
       timed whole, with the status it really ends with: a refusal by
       authentication or the limits, a status the error interceptor mapped,
       a cancellation.
    3. ``AccessLogInterceptor``: opens the call's record
       (``access_log.call_record``), which everything inside fills in, and
       puts the request id in the trailing metadata before anything inside
       can end the call, so ``status_codes.abort`` can quote it. Outside the
       error interceptor, so its line has the final status.
    4. ``AuditInterceptor``: inside the access log, whose record its line is
       written from; outside authentication, so refused mutating calls are
       audited too.
    5. ``AuthenticationInterceptor``: inside both logs, so a refused call
       has its lines; outside the error interceptor, so it reports
       UNAUTHENTICATED itself. Ahead of the rest: a refused call opens no
       span and takes no call slot, and the principal is set before the
       handler and the store decorators decide rights and quotas by it. A
       bearer token is checked from the headers: a call without a valid one
       gets a handler that refuses it without reading its request, which
       the interceptors outside still wrap, so it is logged, audited and
       counted.
    6. ``TracingInterceptor``: inside the access log, to whose record it
       gives the trace id; outside the error interceptor, so the span
       records the mapped status; around the handler, so the storage
       layer's spans (one per S3 request) are its children.
    7. ``ErrorInterceptor``: turns what the limits and the handler raise,
       and a request that could not be decoded, into its documented status,
       so everything outside it sees that status.
    8. ``UnaryLimitInterceptor``: innermost, so a call holds a slot only
       while its handler runs; a refusal (RESOURCE_EXHAUSTED) goes through
       the error interceptor like any other.
    """
    identified = storage_call if authentication is None else authentication.identified
    chain: list[grpc.aio.ServerInterceptor] = [
        AdmissionInterceptor(
            settings.max_calls,
            settings.max_anonymous_calls,
            identified,
            settings.anonymous_request_timeout,
            registry,
        )
    ]
    if registry is not None:
        chain.append(MetricsInterceptor(RpcMetrics(registry)))
    chain += [
        AccessLogInterceptor(settings.default_bucket),
        AuditInterceptor(settings.default_bucket),
    ]
    if authentication is not None:
        chain.append(authentication)
    if traced:
        chain.append(TracingInterceptor())
    chain += [
        ErrorInterceptor(),
        UnaryLimitInterceptor(
            settings.max_list_calls,
            settings.max_unary_calls,
            settings.unary_queue_timeout,
            lists_per_principal=settings.list_calls_per_principal,
            others_per_principal=settings.unary_calls_per_principal,
        ),
    ]
    return chain


__all__ = ["interceptor_chain"]
