"""The agent's serving side: batched inference from one weight version, propensities logged."""
