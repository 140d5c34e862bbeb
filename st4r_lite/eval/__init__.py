"""World-frame evaluation (docs/method.md §7): sequences, predictions, metrics, and the peers."""
