"""Prefect tasks, one per registry stage, each a thin call of the library function behind it (``tasks.stages``)."""
