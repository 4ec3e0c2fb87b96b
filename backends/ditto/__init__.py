"""Ditto talking head (antgroup/ditto-talkinghead) in online mode, from a clone the config names.

    hops.py     the run_chunk windows and the SDK's output lag, as arithmetic
    sink.py     a writer with the interface of Ditto's, handing frames to the replica
    streams.py  the pool of SDK instances and the streams open on them
    backend.py  the animator backend ("ditto")
"""

from .backend import Ditto, DittoAvatar, DittoState  # registers the "ditto" animator backend

__all__ = ["Ditto", "DittoAvatar", "DittoState"]
