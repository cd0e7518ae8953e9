"""Dead-letter routes: list, replay one or a queue's, discard."""
