"""Training and evaluation: synthetic data, real-data readers, losses, the loop, metrics."""
