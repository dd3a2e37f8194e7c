"""Lightning callbacks of the training layer."""
