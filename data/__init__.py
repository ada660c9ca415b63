"""captions.csv datasets: reading, image decoding, transforms and PyTorch datasets."""
