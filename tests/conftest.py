"""The shared fixtures live in :mod:`tests.support.fixtures`, registered here as a plugin."""

pytest_plugins = ["tests.support.fixtures"]
