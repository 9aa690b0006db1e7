"""Experiments: the paper's protocol and reports (Table 2, the symmetry analysis)."""
