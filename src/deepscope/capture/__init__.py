"""Capture during training: scoped hooks, on-device reducers, step logic, diagnoses (``run.watch``)."""
