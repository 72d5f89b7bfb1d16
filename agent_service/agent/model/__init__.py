"""The agent's model: states, networks and the estimates behind v̂ (no optimisers, no sampling)."""
