"""The streaming flow's handlers: decide, record outcomes, join conversions, close windows.

The same code runs in process (``gaelp simulate``) and as Faust agents (``gaelp serve``);
only the bus and store adapters differ.
"""
