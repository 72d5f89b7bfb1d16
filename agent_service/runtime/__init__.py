"""Runtimes: the embedded simulation, the production service, and the simulator driver."""
