"""The HTTP side's floor: the least a Flask app under the proxy's own server does for one image request.

``gunicorn -k proxy.front.worker.FrontWorker bench.bare_flask:app`` (``bench.stack.bare_flask``): one route that
reads the whole body and answers a small JSON, nothing else. The CPU its workers use per request is what any Flask
service on this front costs; the proxy's own overhead is what it costs beyond this and the bare gRPC client
(``bench.grpc_floor``).
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/classify")
def classify() -> Response:
    """Read the body; answer its length."""
    body = request.get_data(cache=False)
    return jsonify(bytes=len(body))
