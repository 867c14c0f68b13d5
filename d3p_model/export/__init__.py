"""Deployment: the whole K-step refinement as one ONNX graph (`onnx`), run by ONNX Runtime
(`runtime`), exported by `d3p export` (`cli`)."""
