"""FreeSWITCH event socket (ESL) client: a sans-IO protocol core (protocol.py) and a gevent
connection (connection.py, with subscriptions.py and waiters.py).

Our own because python-ESL does not build with SWIG >= 4 and blocks the gevent hub, and
greenswitch merges event bodies into headers and has no command timeouts.
"""
