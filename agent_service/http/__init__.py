"""The HTTP face of the service: the OpenRTB 2.6 bid endpoint, /metrics and admin actions."""
