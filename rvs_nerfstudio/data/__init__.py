"""Data: parsers for the layouts users have (LLFF, auto-detection) and synthetic scenes with known ground truth."""
