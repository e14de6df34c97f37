"""Synthetic people: the anny body model, posed by motion capture, rendered onto real backgrounds."""
