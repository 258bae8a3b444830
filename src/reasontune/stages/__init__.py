"""The stages: one module per thing a user runs (train, sft, eval, advise, ask, demo, compare, report, export).

Each stage module holds its entry function and registers its own CLI verb; `cli.py` only wires them together.
Stages build on every layer below them (runs, export, engines, foundations, config) and never the reverse.
"""
