"""Batch generation from JSONL jobs on S3 or local disk: the job format, storage, and the run itself."""
