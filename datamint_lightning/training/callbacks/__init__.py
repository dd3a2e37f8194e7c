"""Lightning callbacks of the training layer, one per file."""
