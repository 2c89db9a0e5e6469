"""Loaders of released baseline checkpoints in their official layouts (one module per family)."""
