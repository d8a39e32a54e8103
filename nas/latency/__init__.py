"""A latency is a measurement: `measure.py` (the protocol and the device fingerprint), `runtimes.py` (eager, ONNX
Runtime, int8), `text.py` (end to end from raw text), `predictor.py` (an additive model fitted on measurements, for
pruning only), `slot.py` (the per-node exclusive measurement slot)."""
