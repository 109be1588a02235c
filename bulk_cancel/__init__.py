"""bulk-cancel: cancel scheduled 8x8 messages in bulk."""

__version__ = "0.1.0"
