"""Adapters behind the ports: in-process defaults and production clients (Redis, Kafka)."""
