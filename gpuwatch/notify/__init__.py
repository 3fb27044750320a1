"""Messages to people: composing them from findings, and delivering them."""
