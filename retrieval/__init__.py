"""Retrieval: read, normalise and parse regulations; index and search them; build cited answers."""
