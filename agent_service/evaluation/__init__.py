"""Measuring policies: the evaluation harness, the market port and its simulator adapter, and the
reference policies (fixed, truthful, linear, dual pacing, clairvoyant references) every agent
result is reported beside."""
