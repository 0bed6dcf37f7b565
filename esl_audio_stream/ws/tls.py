"""The TLS context for a wss:// stream, from its STREAM_TLS_* settings.

Why a cache: `ssl.create_default_context()` parses the whole system trust store, ~50 ms of CPU
in which the gevent loop (and every call's audio) stands still. Streams with the same TLS
settings share one context (an `SSLContext` may serve any number of connections), rebuilt only
when one of its files changes (size, mtime, ctime or inode), so rotated certificates are picked up
by the next stream without a restart. Never modify a returned context.

File problems are reported as SettingsError naming the variable, so a start fails with a clear
-ERR instead of a TLS error from deep inside the handshake.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections import OrderedDict

from ..app.settings import SettingsError, StreamSettings, check_client_cert

log = logging.getLogger(__name__)

_CACHE_SIZE = 16
_cache: OrderedDict[tuple[object, ...], ssl.SSLContext] = OrderedDict()


def make_ssl_context(settings: StreamSettings) -> ssl.SSLContext:
    """The client context for these settings: call once per stream start, never per frame.

    tls_ca "SYSTEM": the system trust store; "NONE": no verification at all; else a PEM CA file
    or bundle. tls_check_hostname False skips only the name check (the chain is still verified).
    tls_cert/tls_key: a client certificate and its unencrypted key (both or neither).
    """
    check_client_cert(settings)
    key = (
        settings.tls_ca,
        settings.tls_cert,
        settings.tls_key,
        settings.tls_check_hostname,
        _ca_signature(settings.tls_ca),
        _signature("STREAM_TLS_CERT_FILE", settings.tls_cert),
        _signature("STREAM_TLS_KEY_FILE", settings.tls_key),
    )
    ctx = _cache.get(key)
    if ctx is not None:
        _cache.move_to_end(key)
        return ctx
    ctx = _build(settings)
    _cache[key] = ctx
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return ctx


def clear_cache() -> None:
    """Forget every built context (tests; or to force a reload of the system trust store)."""
    _cache.clear()


def _signature(name: str, path: str | None) -> tuple[int, ...] | None:
    """What identifies a file's current content cheaply; SettingsError if it is not there."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path}: {exc.strerror}") from None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _ca_signature(ca: str) -> tuple[int, ...] | None:
    if ca == "NONE":
        return None
    if ca == "SYSTEM":
        cafile = ssl.get_default_verify_paths().cafile
        try:
            return _signature("STREAM_TLS_CA_FILE", cafile) if cafile else None
        except SettingsError:
            return None  # no system bundle file (a capath-only system): nothing to watch
    return _signature("STREAM_TLS_CA_FILE", ca)


def _check_readable(name: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _build(settings: StreamSettings) -> ssl.SSLContext:
    ca = settings.tls_ca
    if ca == "NONE":
        # Not create_default_context(): it would parse the system store only to ignore it.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("STREAM_TLS_CA_FILE=NONE: WebSocket server certificates are NOT verified")
    elif ca == "SYSTEM":
        ctx = ssl.create_default_context()
    else:
        _check_readable("STREAM_TLS_CA_FILE", ca)
        try:
            ctx = ssl.create_default_context(cafile=ca)
        except ssl.SSLError as exc:
            raise SettingsError(
                f"STREAM_TLS_CA_FILE: no usable PEM certificate in {ca} ({_why(exc)})"
            ) from None
    if ca != "NONE":
        # As Python 3.13's create_default_context() does, on every interpreter: a daemon on
        # Debian 12 (3.11) verifies with the same flags as one on Debian 13 (3.13). STRICT
        # refuses what RFC 5280 forbids (e.g. a CA certificate without keyUsage; the README says
        # how to re-issue one); PARTIAL_CHAIN lets an intermediate in the CA file be the anchor.
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    if not settings.tls_check_hostname:
        ctx.check_hostname = False  # verify_mode stays CERT_REQUIRED: the chain is still checked
    if settings.tls_cert and settings.tls_key:
        _load_client_cert(ctx, settings.tls_cert, settings.tls_key)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    _check_readable("STREAM_TLS_CERT_FILE", cert)
    _check_readable("STREAM_TLS_KEY_FILE", key)
    # OpenSSL reports a bad certificate and a bad key alike ("PEM lib"); parsing the certificate
    # on its own first tells them apart.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise SettingsError(
            f"STREAM_TLS_CERT_FILE: no usable PEM certificate in {cert} ({_why(exc)})"
        ) from None

    def no_passphrase() -> bytes:
        # Without a callback OpenSSL would ask for the passphrase on the terminal, blocking.
        raise SettingsError(
            f"STREAM_TLS_KEY_FILE: the key in {key} is encrypted; give an unencrypted key"
        )

    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise SettingsError(
                f"STREAM_TLS_KEY_FILE: the key in {key} does not match the certificate in {cert}"
            ) from None
        raise SettingsError(
            f"STREAM_TLS_KEY_FILE: no usable PEM private key in {key} ({_why(exc)})"
        ) from None


def _why(exc: ssl.SSLError) -> str:
    """OpenSSL's reason, readable and without the "(_ssl.c:1234)" noise."""
    if exc.reason:
        return exc.reason.replace("_", " ").lower()
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
