"""SHA-256 whose running state can be saved and restored.

A resumable upload session may be continued by another gateway instance than
the one that hashed its first bytes, so the hash of the bytes already stored
has to travel with the session. hashlib cannot export its state; OpenSSL's
SHA256_CTX is a plain struct, so the same C implementation is used here
through ctypes and its bytes are the saved state. The functions are
deprecated in OpenSSL 3 but still exported, and as fast as hashlib's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib

_CTX_SIZE = 112  # sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypto")
    if name is None:
        raise RuntimeError("OpenSSL's libcrypto is not installed; resumable uploads need it")
    lib = ctypes.CDLL(name)
    lib.SHA256_Init.argtypes = [ctypes.c_void_p]
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


_lib = _load()


class Sha256State:
    """An incremental SHA-256 with ``state()`` to save and a constructor to
    restore it."""

    def __init__(self, state: bytes | None = None) -> None:
        self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
        if state is None:
            _lib.SHA256_Init(self._ctx)
        elif len(state) != _CTX_SIZE:
            raise ValueError(f"a saved SHA-256 state is {_CTX_SIZE} bytes, not {len(state)}")
        else:
            ctypes.memmove(self._ctx, state, _CTX_SIZE)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        if view.readonly:
            _lib.SHA256_Update(self._ctx, bytes(view), view.nbytes)
        else:
            buffer = (ctypes.c_char * view.nbytes).from_buffer(view)
            _lib.SHA256_Update(self._ctx, buffer, view.nbytes)
            del buffer

    def state(self) -> bytes:
        return self._ctx.raw

    def digest(self) -> bytes:
        """The hash of everything so far; the state stays usable."""
        ctx = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        _lib.SHA256_Final(out, ctx)
        return out.raw


def _self_test() -> None:
    """Refuse to start on a libcrypto whose SHA256_CTX is not what we expect."""
    probe = Sha256State()
    probe.update(b"blobgate")
    restored = Sha256State(probe.state())
    restored.update(b" sessions")
    if restored.digest() != hashlib.sha256(b"blobgate sessions").digest():
        raise RuntimeError("libcrypto's SHA-256 state does not round-trip; sessions unsupported")


_self_test()
