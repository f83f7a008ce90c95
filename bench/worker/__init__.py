"""bench/worker (see bench/README.md)."""
