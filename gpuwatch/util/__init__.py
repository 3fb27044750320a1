"""Small helpers with I/O that several adapters share (kept out of the pure model)."""
