"""OOD attribution: which candidate behaviour the model follows outside the training region."""
