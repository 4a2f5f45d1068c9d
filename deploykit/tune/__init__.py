"""`deploykit tune`: the fastest verified CPU engine and precision for one model, chosen by measurement.

candidates.py: the engine/precision pairs and how each is verified; measure.py: interleaved timing and the
choice; install.py: the winner written into the model repository (Triton layout) with the table and why.
"""
