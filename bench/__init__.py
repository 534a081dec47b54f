"""``make bench``: the proxy measured against the floor (direct Predict on TF Serving) and the old way.

``python -m bench [--quick] [--out DIR]`` generates the demo model, starts the TF Serving stand-in, the proxy in
serving mode and the seed service's method (``bench/seed_service.py``), loads each with 1, 8 and 32 concurrent
clients on 640x480 and 4000x3000 JPEGs, and writes ``results.md`` and ``results.png``.

Modules: ``stack`` (the processes and /proc readings), ``load`` (clients and bounded load rounds), ``report``
(targets, markdown, chart), ``seed_service`` (the old way).
"""
