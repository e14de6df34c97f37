"""Everything about the network and running it.

`engines` imports neither `streamer` nor `train`: both depend on it, never the other way round.
"""
