"""bench/overhead (see bench/README.md)."""
