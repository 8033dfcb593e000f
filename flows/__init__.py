"""Prefect flows over the library: the whole DAG, batch generation and the deployments."""
