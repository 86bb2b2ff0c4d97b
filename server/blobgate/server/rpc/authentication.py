"""Authentication: every StorageService call names who is calling, or is
refused with UNAUTHENTICATED before its handler runs.

The source is the server's mode: in mTLS the verified client certificate
(``identity.certificate_principal``), with ``jwt_jwks_file`` a bearer JWT
(``identity.JwtVerifier``); with neither (plaintext, or TLS alone) there is
no identity source, calls carry no principal, and no interceptor is
installed. Health and reflection are other services and pass untouched.

A bearer token is checked from the call's headers, before gRPC reads its
request message: a call without a valid one is refused at once with a
handler that never receives the message (``admission.refusing_handler``),
so the megabytes a caller announces cost nothing. The same verdict tells
admission (``rpc.admission``) whether the call counts as identified; it is
reached once per call (a contextvar holds it for the call's task). A client
certificate is known only to the handler's context, so in mTLS the check
runs as the handler starts; there, every caller has already passed the TLS
handshake with a certificate the CA signed.

The interceptor reports a refusal itself; its place in the chain, and why,
is given in ``rpc.chain``. The principal goes into the call's access log
record and a contextvar (``identity.current_principal``) for what decides
rights and quotas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

import grpc

from blobgate.server.core.errors import Unauthenticated
from blobgate.server.core.identity import (
    AUTHORIZATION_KEY,
    JwtVerifier,
    acting_as,
    bearer_token,
    certificate_principal,
)
from blobgate.server.rpc.access_log import call_record
from blobgate.server.rpc.admission import refusing_handler, storage_call
from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.server.rpc.status_codes import Context, abort

Authenticate = Callable[[Context], str]
"""Who is calling, from the call's context; raises Unauthenticated."""


def from_certificate(context: Context) -> str:
    """The principal of the call's verified client certificate."""
    principal = certificate_principal(context.auth_context())
    if principal is None:
        raise Unauthenticated(
            "the client certificate names no identity: present one with a URI SAN "
            "(e.g. a SPIFFE ID), a DNS SAN or a subject CN"
        )
    return principal


Metadata = Iterable[tuple[str, Any]]
FromMetadata = Callable[[Metadata | None], str]
"""Who is calling, from the call's metadata alone; raises Unauthenticated."""

Verdict = str | Unauthenticated
# The verdict on the call of this task, with the call details it was reached
# for: admission and authentication ask, the token is checked once.
_verdict: ContextVar[tuple[object, Verdict] | None] = ContextVar("blobgate_verdict", default=None)


def from_bearer_token(verifier: JwtVerifier) -> FromMetadata:
    """The ``sub`` of the call's bearer JWT, checked by ``verifier``."""

    def authenticate(metadata: Metadata | None) -> str:
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated(
                f"this call needs an identity: present a bearer token ({AUTHORIZATION_KEY}: "
                "Bearer <JWT>)"
            )
        return verifier.principal(token)

    return authenticate


class AuthenticationInterceptor(MethodInterceptor):
    """Refuses StorageService calls without an identity; records the
    principal of the others. ``authenticate`` decides from the handler's
    context (mTLS); ``from_metadata`` decides from the headers, before the
    request is read (bearer JWTs)."""

    def __init__(
        self,
        authenticate: Authenticate | None = None,
        *,
        from_metadata: FromMetadata | None = None,
    ) -> None:
        super().__init__()
        if (authenticate is None) == (from_metadata is None):
            raise ValueError("give authenticate or from_metadata")
        self._authenticate = authenticate
        self._from_metadata = from_metadata
        self._refusals: dict[str, Handler] = {}

    def identified(self, details: grpc.HandlerCallDetails) -> bool:
        """Whether a call counts as identified for admission: a
        StorageService call, with a valid bearer token when tokens are the
        source (in mTLS, the handshake verified the caller's certificate)."""
        if not storage_call(details):
            return False
        return self._from_metadata is None or isinstance(self._verdict(details), str)

    def _verdict(self, details: grpc.HandlerCallDetails) -> Verdict:
        cached = _verdict.get()
        if cached is not None and cached[0] is details:
            return cached[1]
        verdict = self._check(details.invocation_metadata)
        _verdict.set((details, verdict))
        return verdict

    def _check(self, metadata: Metadata | None) -> Verdict:
        assert self._from_metadata is not None
        try:
            return self._from_metadata(metadata)
        except Unauthenticated as exc:
            return exc

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        if self._from_metadata is not None and storage_call(handler_call_details):
            verdict = self._verdict(handler_call_details)
            if isinstance(verdict, Unauthenticated):
                return self._refusal(verdict.message)
        return await super().intercept_service(continuation, handler_call_details)

    def _refusal(self, message: str) -> Handler:
        """A handler refusing with ``message`` without reading the request;
        one per message (the verifier has a handful)."""
        handler = self._refusals.get(message)
        if handler is None:
            handler = refusing_handler(grpc.StatusCode.UNAUTHENTICATED, message)
            if len(self._refusals) < 16:
                self._refusals[message] = handler
        return handler

    def wrap(self, handler: Handler, method: str) -> Handler:
        return rewrap(handler, lambda behaviour: self._guarded(behaviour, method))

    def _principal(self, context: Context) -> str:
        if self._authenticate is not None:
            return self._authenticate(context)
        cached = _verdict.get()
        # Outside the chain (a handler run on its own) no verdict was reached.
        verdict = self._check(context.invocation_metadata()) if cached is None else cached[1]
        if isinstance(verdict, Unauthenticated):
            raise verdict
        return verdict

    def _guarded(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                principal = self._principal(context)
            except Unauthenticated as exc:
                await abort(context, exc, method)
            call_record().principal = principal
            with acting_as(principal):
                return await behaviour(request, context)

        return call


def authentication_for(
    mutual_tls: bool, verifier: JwtVerifier | None
) -> AuthenticationInterceptor | None:
    """The interceptor of the server's identity source: the client
    certificate in mTLS, else a bearer JWT; None when there is neither."""
    if mutual_tls:
        return AuthenticationInterceptor(from_certificate)
    if verifier is not None:
        return AuthenticationInterceptor(from_metadata=from_bearer_token(verifier))
    return None


__all__ = [
    "AuthenticationInterceptor",
    "authentication_for",
    "from_bearer_token",
    "from_certificate",
]
