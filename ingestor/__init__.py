"""ingestor: a streaming embedding ingestion daemon (Kafka → sentence-transformers → Milvus)."""

__version__ = "0.1.0"
