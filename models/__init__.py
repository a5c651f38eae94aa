"""The neural parts behind the core's ports. Heavy imports happen lazily, here."""

import os

# Weights come from installed packages or local paths, never from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
