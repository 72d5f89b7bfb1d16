"""Subcommands of the ``gaelp`` CLI, one module each (see agent_service.cli)."""
