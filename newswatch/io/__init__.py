"""What every stage shares.

Kafka producers and consumers, HTTP endpoints, dead letters and the record schemas.
"""
