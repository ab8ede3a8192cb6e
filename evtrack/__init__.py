"""evtrack: real-time event tracking on Tinybird, with the same datafiles on a laptop."""

__version__ = "0.1.0"

__all__ = ["Tracker", "__version__"]


def __getattr__(name: str):
    # The tracker is loaded when an app asks for it, so `evtrack` commands do not pay for it.
    if name == "Tracker":
        from .tracker import Tracker

        return Tracker
    raise AttributeError(f"module 'evtrack' has no attribute {name!r}")
