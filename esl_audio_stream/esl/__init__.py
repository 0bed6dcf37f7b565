"""FreeSWITCH event socket (ESL) client: a sans-IO protocol core and a gevent connection.

Our own because python-ESL does not build with SWIG >= 4 and blocks the gevent hub, and
greenswitch merges event bodies into headers and has no command timeouts.
"""

from .connection import ESLAuthError, ESLConnection, ESLDisconnected, ESLError, ESLTimeout
from .protocol import (
    CommandInjectionError,
    ESLParser,
    ESLProtocolError,
    Event,
    Message,
    cmd_api,
    cmd_auth,
    cmd_bgapi,
    cmd_event_plain,
    cmd_exit,
    cmd_sendevent,
    cmd_sendmsg,
)

__all__ = [
    "CommandInjectionError",
    "ESLAuthError",
    "ESLConnection",
    "ESLDisconnected",
    "ESLError",
    "ESLParser",
    "ESLProtocolError",
    "ESLTimeout",
    "Event",
    "Message",
    "cmd_api",
    "cmd_auth",
    "cmd_bgapi",
    "cmd_event_plain",
    "cmd_exit",
    "cmd_sendevent",
    "cmd_sendmsg",
]
