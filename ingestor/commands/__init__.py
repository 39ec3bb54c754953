"""The commands besides `run`: check, stats, produce, dlq replay."""
