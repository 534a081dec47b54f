"""The HTTP front: an event loop that reads each request whole before a thread runs the WSGI app.

A connection costs a socket and a small buffer, never a thread, while its request arrives (headers and body,
within time and rate bounds) and while its answer drains to the client: slow, silent and non-reading clients
cannot take the threads from ordinary ones. One asyncio loop per gunicorn worker process (``worker``), HTTP/1.1
parsed by h11 (``connection``), the bounds and the app's threads kept per process (``server``).
"""

# What the front tells the app through the WSGI environ.
ENVIRON_RECEIVED = "classifyobjects.received"  # time.perf_counter() when the request had fully arrived
ENVIRON_REQUEST_BYTES = "classifyobjects.request_bytes"  # the body's bytes as received, chunked bodies included
