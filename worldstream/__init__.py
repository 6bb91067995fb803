"""worldstream: an open real-time world model and the toolkit around it."""
__version__ = "0.1.0"
