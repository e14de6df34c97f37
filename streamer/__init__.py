"""Sources, the frame ring, the pipeline stages, track writers and the command line."""
