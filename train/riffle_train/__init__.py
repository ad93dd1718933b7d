"""riffle_train: PyTorch training path for riffle orthogonal adapters."""
__version__ = "0.1.0"
