"""Training and benchmark problems: loading (parquet, JSONL, Hugging Face, S3), validation and filtering."""
