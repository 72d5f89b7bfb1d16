"""The agent: state features, networks, policies, learners and the model registry."""
