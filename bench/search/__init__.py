"""bench/search (see bench/README.md)."""
