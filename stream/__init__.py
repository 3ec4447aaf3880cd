"""Kafka I/O, schemas, the pipeline stages, windows and the CLI."""
