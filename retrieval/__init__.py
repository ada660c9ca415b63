"""Using a trained model: index folders (galleries), vector search, zero-shot classification, encoders
(PyTorch or ONNX)."""
