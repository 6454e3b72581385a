"""Workloads: model configs, the project's decoder modules, and trace capture of real PyTorch execution.

torch is imported lazily (only by capture and the decoder modules), so the value types here import without it.
"""
