"""Canary promotion and creative A/B experiments: hashed assignment, always-valid sequential statistics,
guardrails and the state machines around them (pure domain code; storage and serving live elsewhere)."""
