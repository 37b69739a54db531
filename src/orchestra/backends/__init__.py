"""Model backends behind one `ChatBackend` protocol, and the price table."""
