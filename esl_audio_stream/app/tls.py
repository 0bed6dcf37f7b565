"""A stream's TLS context from its STREAM_TLS_* settings (the ws layer knows no settings).

What this adds to ws/tls.py: the names users see. A file problem is reported as SettingsError
naming the variable that gave the file (STREAM_TLS_CA_FILE, ...), so a start fails with a clear
-ERR and the daemon refuses a bad reload before anything connects.
"""

from __future__ import annotations

import ssl

from ..ws.tls import TLSFileError, make_ssl_context
from .settings import SettingsError, StreamSettings, check_client_cert

_VARIABLES = {"ca": "STREAM_TLS_CA_FILE", "cert": "STREAM_TLS_CERT_FILE",
              "key": "STREAM_TLS_KEY_FILE"}


def ssl_context_for(settings: StreamSettings) -> ssl.SSLContext:
    """The (shared, cached) client context for these settings; SettingsError names the variable
    of an unusable file. Call once per stream start, never per frame."""
    check_client_cert(settings)
    try:
        return make_ssl_context(ca=settings.tls_ca, cert=settings.tls_cert, key=settings.tls_key,
                                check_hostname=settings.tls_check_hostname)
    except TLSFileError as exc:
        raise SettingsError(f"{_VARIABLES[exc.which]}: {exc.detail}") from None
