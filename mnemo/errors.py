"""Exceptions of the memory core.

MnemoError
 ├── ConfigError          settings that cannot be used
 ├── EmbedderError        the embedder failed or does not match the store
 │    └── EmbedderOverloaded   the query embedder cannot answer by the caller's deadline
 ├── StoreError           the vector store failed
 │    └── StoreMismatchError   the collection was built by another embedder
 ├── QueueError           an exchange could not be enqueued
 └── ExtractionError      the extraction LLM failed or answered garbage
      └── TransientExtractionError   worth retrying later (429, 5xx, timeouts)
"""


class MnemoError(Exception):
    pass


class ConfigError(MnemoError):
    pass


class EmbedderError(MnemoError):
    pass


class EmbedderOverloaded(EmbedderError):
    pass


class StoreError(MnemoError):
    pass


class StoreMismatchError(StoreError):
    pass


class QueueError(MnemoError):
    pass


class ExtractionError(MnemoError):
    pass


class TransientExtractionError(ExtractionError):
    pass
