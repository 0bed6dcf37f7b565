"""WebSocket client (wsproto over gevent sockets, ssl for wss) carrying a stream's audio and text.

The protocol work is wsproto's (sans-IO); this package only moves its bytes over a socket, with
bounded buffers, timeouts and owned greenlets.
"""
