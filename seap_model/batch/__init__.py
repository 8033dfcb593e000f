"""Batch generation into files: the engine (plan, render, content-addressed outputs and sidecars), the job format
and storage (local disk or S3) for batch jobs, and the generate stage's items."""
