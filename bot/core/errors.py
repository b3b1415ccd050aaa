"""The one exception type through which storage failures reach the core.

The store raises :class:`StorageUnavailable` (or a subclass) when the database cannot be reached;
the core answers such a message with :data:`bot.core.texts.SERVICE_UNAVAILABLE`. The core never
sees a driver's or SQLAlchemy's own exceptions.
"""
from __future__ import annotations


class StorageUnavailable(RuntimeError):
    """The database cannot be reached right now; nothing was written."""
