"""The memory REST API: reads and searches, writes and corrections, a user's feed, export and
erasure, request lookups, and the mem0-compatible API, mounted by gateway.app."""
