"""The lab: trains and measures the GAELP agent on the simulators and the iPinYou replay.

It sits above both the agent and the evaluation harness (``gaelp train``, ``gaelp evaluate``,
``gaelp bench ipinyou``), so neither of them — nor the simulators — imports it.
"""
