"""Mnemo's memory core: shared by the gateway and the worker, importing neither."""

__version__ = "0.1.0"
