"""Reading provenance records (ours and the original tool's) for the ``clowdr share`` dashboard."""
