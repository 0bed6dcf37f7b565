"""WebSocket client, shaped like wsproto: sans-IO pieces and one gevent shell.

url.py (ws:// and wss:// URLs), errors.py (libwsc's error codes), framing.py (frames as bytes:
built, masked, compressed, parsed; no socket), tls.py (client TLS contexts from plain arguments),
handshake.py (TCP, TLS, the HTTP upgrade), outgoing.py (what an open connection sends, never
waiting on its own) and connection.py (one connection: its socket, reader and heartbeat).
Queuing is the owner's (call/backlog.py): a connection keeps at most the rest of one frame.
"""
