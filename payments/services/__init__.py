"""Business logic. Views call exactly one service; services own transactions and locks."""
