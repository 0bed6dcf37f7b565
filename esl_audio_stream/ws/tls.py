"""The client TLS context for wss://, from plain arguments: a CA, a client certificate and key.

Why a cache: `ssl.create_default_context()` parses the whole system trust store, ~50 ms of CPU
in which the gevent loop (and every call's audio) stands still. Connections with the same TLS
arguments share one context (an `SSLContext` may serve any number of connections), rebuilt only
when one of its files changes (size, mtime, ctime or inode), so rotated certificates are picked up
by the next connection without a restart. Never modify a returned context.

File problems raise TLSFileError saying which file (`which`: "ca", "cert" or "key") and what is
wrong with it, so a caller can name the setting it came from (app/tls.py names the STREAM_TLS_*
variable) instead of failing with a TLS error from deep inside a handshake.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections import OrderedDict

from .errors import WSError, WSErrorCode

log = logging.getLogger(__name__)

_CACHE_SIZE = 16
_cache: OrderedDict[tuple[object, ...], ssl.SSLContext] = OrderedDict()
_LABELS = {"ca": "CA file", "cert": "client certificate file", "key": "client key file"}


class TLSFileError(WSError):
    """An unusable TLS file: libwsc's TLS_INIT_FAILED, with which file and what is wrong."""

    def __init__(self, which: str, detail: str) -> None:
        super().__init__(WSErrorCode.TLS_INIT_FAILED, f"{_LABELS[which]}: {detail}")
        self.which = which  # "ca" | "cert" | "key"
        self.detail = detail


def make_ssl_context(*, ca: str = "SYSTEM", cert: str | None = None, key: str | None = None,
                     check_hostname: bool = True) -> ssl.SSLContext:
    """The client context for these arguments: call once per connection, never per frame.

    ca "SYSTEM": the system trust store; "NONE": no verification at all; else a PEM CA file or
    bundle. check_hostname False skips only the name check (the chain is still verified).
    cert/key: a client certificate and its unencrypted key (both or neither).
    """
    if bool(cert) != bool(key):
        which = "key" if cert else "cert"
        raise TLSFileError(which, "missing: a client certificate needs its key, and a key its "
                                  "certificate")
    signature = (ca, cert, key, check_hostname, _ca_signature(ca),
                 _signature("cert", cert), _signature("key", key))
    ctx = _cache.get(signature)
    if ctx is not None:
        _cache.move_to_end(signature)
        return ctx
    ctx = _build(ca, cert, key, check_hostname)
    _cache[signature] = ctx
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return ctx


def clear_cache() -> None:
    """Forget every built context (tests; or to force a reload of the system trust store)."""
    _cache.clear()


def _signature(which: str, path: str | None) -> tuple[int, ...] | None:
    """What identifies a file's current content cheaply; TLSFileError if it is not there."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TLSFileError(which, f"cannot read {path}: {exc.strerror}") from None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _ca_signature(ca: str) -> tuple[int, ...] | None:
    if ca == "NONE":
        return None
    if ca == "SYSTEM":
        cafile = ssl.get_default_verify_paths().cafile
        try:
            return _signature("ca", cafile) if cafile else None
        except TLSFileError:
            return None  # no system bundle file (a capath-only system): nothing to watch
    return _signature("ca", ca)


def _check_readable(which: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise TLSFileError(which, f"cannot read {path}: {exc.strerror}") from None


def _build(ca: str, cert: str | None, key: str | None, check_hostname: bool) -> ssl.SSLContext:
    """A new context (the cache's miss path): the one place a context is configured."""
    if ca == "NONE":
        # Not create_default_context(): it would parse the system store only to ignore it.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("TLS CA NONE: WebSocket server certificates are NOT verified")
    elif ca == "SYSTEM":
        ctx = ssl.create_default_context()
    else:
        _check_readable("ca", ca)
        try:
            ctx = ssl.create_default_context(cafile=ca)
        except ssl.SSLError as exc:
            raise TLSFileError("ca", f"no usable PEM certificate in {ca} ({_why(exc)})") from None
    if ca != "NONE":
        # As Python 3.13's create_default_context() does, on every interpreter: a daemon on
        # Debian 12 (3.11) verifies with the same flags as one on Debian 13 (3.13). STRICT
        # refuses what RFC 5280 forbids (e.g. a CA certificate without keyUsage; the README says
        # how to re-issue one); PARTIAL_CHAIN lets an intermediate in the CA file be the anchor.
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    if not check_hostname:
        ctx.check_hostname = False  # verify_mode stays CERT_REQUIRED: the chain is still checked
    if cert and key:
        _load_client_cert(ctx, cert, key)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    _check_readable("cert", cert)
    _check_readable("key", key)
    # OpenSSL reports a bad certificate and a bad key alike ("PEM lib"); parsing the certificate
    # on its own first tells them apart.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise TLSFileError("cert", f"no usable PEM certificate in {cert} ({_why(exc)})") from None

    def no_passphrase() -> bytes:
        # Without a callback OpenSSL would ask for the passphrase on the terminal, blocking.
        raise TLSFileError("key", f"the key in {key} is encrypted; give an unencrypted key")

    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSFileError(
                "key", f"the key in {key} does not match the certificate in {cert}"
            ) from None
        raise TLSFileError("key", f"no usable PEM private key in {key} ({_why(exc)})") from None


def _why(exc: ssl.SSLError) -> str:
    """OpenSSL's reason, readable and without the "(_ssl.c:1234)" noise."""
    if exc.reason:
        return exc.reason.replace("_", " ").lower()
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
