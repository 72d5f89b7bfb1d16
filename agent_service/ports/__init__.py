"""Ports: the small interfaces the domain talks to. Adapters live in agent_service.adapters."""
