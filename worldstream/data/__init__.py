"""The on-disk dataset format, recording, import of user data and fast loading."""
from .format import Dataset, DatasetError, Episode

__all__ = ["Dataset", "DatasetError", "Episode"]
