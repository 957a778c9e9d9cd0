"""`tmd eval`: quality against effective NFE for a teacher and its students, shaped like the paper's Tables 1-2.

Two scorers, one report format (report.py): VBench for Wan2.1 videos (vbench.py; VBench itself runs in its own
environment through vbench_driver.py, never imported here) and ToyBench for the toy world (toy.py, which reuses
tmd_core/toy/evaluate.py). Generation with the project's own samplers is in wan.py (docs/eval.md).
"""
