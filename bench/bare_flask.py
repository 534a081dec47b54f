"""The HTTP side's floor: the least a Flask app under the proxy's own server does for one image request.

``gunicorn -k proxy.front.worker.FrontWorker bench.bare_flask:app`` (``bench.stack.bare_flask``): one route that
reads the whole body and answers a small JSON, nothing else. The CPU its workers use per request is what any Flask
service on this front costs; the proxy's own overhead is what it costs beyond this and the bare gRPC client
(``bench.grpc_floor``).

``?wait_ms=N`` makes the route sleep N milliseconds (at most ``MAX_WAIT_MS``) before it answers, as long as a model
call takes: a worker whose request waits wakes at a cost of its own, which the app without a wait never pays.
"""

from __future__ import annotations

import time

from flask import Flask, Response, jsonify, request

MAX_WAIT_MS = 1000.0

app = Flask(__name__)


@app.post("/classify")
def classify() -> Response:
    """Read the body; wait ``wait_ms`` when asked; answer the body's length."""
    body = request.get_data(cache=False)
    wait_ms = request.args.get("wait_ms", 0.0, type=float)
    if wait_ms > 0:
        time.sleep(min(wait_ms, MAX_WAIT_MS) / 1000)
    return jsonify(bytes=len(body))
