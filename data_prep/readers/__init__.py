"""Readers: one module per raw format, each returning a validated-shape RawDataset."""
