"""Loss plateaus: the detector, its suite tables and comparison, the loss-curve figure."""
