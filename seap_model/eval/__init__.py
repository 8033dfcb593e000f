"""Evaluation: one run of the protocols (``run``), the items and references they use, rendering, frozen
evaluators (YAMNet, VGGish, PANNs, CLAP), scores and distances, the studies and sweeps, the tables and report."""
