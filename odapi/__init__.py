"""The Object Detection API's serving contract and TF Serving's version layout: TensorFlow-free facts that the
converter (which writes models) and the proxy (which serves them) both rely on, kept in one place."""
