"""In-context learning: the error against the number of in-context examples (`figures`)."""
