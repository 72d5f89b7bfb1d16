"""The Faust topology of GAELP: every topic, who consumes it and what it produces (topology.py)."""
