"""The ``mnemo`` command: runs the gateway, the worker, or both in one process."""
