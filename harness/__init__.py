"""Real processes for the test suite and the benchmark: start them, poll until they answer, stop them.

Both ``tests/`` and ``bench/`` use it; it imports neither, and no TensorFlow: the TF Serving stand-in
(``tests/support/fake_tfserving.py``) is started as a module in a subprocess.
"""
