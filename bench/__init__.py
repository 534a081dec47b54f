"""``make bench``: the proxy on the real detector, each number against a floor measured in the same run.

``python -m bench [--quick] [--out DIR]`` exports and converts the default COCO SSDLite detector twice
(``image_tensor`` and ``encoded_image_string_tensor``), starts the TF Serving stand-in, ``python -m proxy`` in serving
and embedded mode and the same app under gunicorn's gthread worker, and measures: the proxy against direct Predict
and against in-process TensorFlow; the two input types' CPU and bytes per request; a JSON batch against single
requests; Frigate's request pattern; the front against gthread; ordinary clients beside hundreds of slow
connections. It prints the targets and writes ``results.md`` and ``results.png``.

Modules: ``stack`` (the processes and /proc readings), ``models`` and ``tf_floor`` (subprocesses that import
TensorFlow, which the load generator never does), ``photos`` (the pictures sent), ``load`` (clients and bounded load
rounds), ``slow`` (slow connections), ``report`` (targets, markdown, chart).
"""
