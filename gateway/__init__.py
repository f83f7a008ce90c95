"""Mnemo's gateway: an OpenAI-compatible proxy that adds memory, plus the memory REST API."""
