"""evtrack: real-time event tracking on Tinybird, with the same datafiles on a laptop."""

__version__ = "0.1.0"

__all__ = ["AsyncTracker", "Client", "Tracker", "__version__"]


def __getattr__(name: str):
    # The tracker and the typed reads are loaded when an app asks for them, so `evtrack` commands do
    # not pay for them.
    if name in ("Tracker", "AsyncTracker"):
        from . import tracker

        return getattr(tracker, name)
    if name == "Client":
        from .reads import Client

        return Client
    raise AttributeError(f"module 'evtrack' has no attribute {name!r}")
