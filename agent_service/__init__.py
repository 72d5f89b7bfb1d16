"""GAELP agent service: the domain (contracts, journeys, agent, learning, pacing, attribution,
identity), its ports and adapters, the OpenRTB endpoint and the ``gaelp`` CLI."""

__version__ = "0.1.0"
