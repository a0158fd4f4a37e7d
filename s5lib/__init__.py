"""s5lib: the Python side of the S5 recipes (data, models, losses, metrics, training, inference)."""
__version__ = "0.1.0"
