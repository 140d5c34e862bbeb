"""World-frame evaluation (DESIGN §7): sequences, predictions, metrics, and the peers."""
