"""Dagster glue only: one folder per domain, loaded by `capacity_pipelines.definitions`."""
