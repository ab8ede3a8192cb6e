"""evtrack: real-time event tracking on Tinybird, with the same datafiles on a laptop."""

__version__ = "0.1.0"
