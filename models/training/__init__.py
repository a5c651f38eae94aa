"""Training: the speech adapter, the state heads, and their data and evaluation.

`duplex train-adapter` and `duplex train-state-head` run it; the runtime
never imports it (its weights ship in `models/data`). It depends on the
runtime models, never the other way round.
"""
