"""The commands besides `run`: check, stats, produce, dlq replay (bench lives in `ingestor.bench`)."""
