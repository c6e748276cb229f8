"""Baselines of the dense multi-task benchmark (Polyhistor, Liu et al., NeurIPS 2022) that are
not hypernetworks: `relative-bias`, `lora-qkv`, `adapter-ln`, `low-rank-adapter` and
`shared-adapter` (`methods.py`), built from the modules in `layers.py`. The definitions are the
ones pinned in spec/polyhistor.md ("Pinned definitions that reproduce the parameter table");
docs/methods/dense.md lists every row of the paper's parameter table with its command.
"""
