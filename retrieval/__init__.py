"""Using a trained model: gallery indexes, search, zero-shot classification, encoders (PyTorch or ONNX)."""
