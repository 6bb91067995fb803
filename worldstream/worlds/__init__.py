"""Built-in procedural worlds that produce training data with ground truth."""
