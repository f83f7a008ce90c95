"""Memory recall on a LOCOMO-format conversation benchmark: Mnemo's ingestion and retrieval
against BM25 and dense baselines over the raw turns."""
