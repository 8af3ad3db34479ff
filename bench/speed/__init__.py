"""Speed benchmark of the generated kernels beside flash-linear-attention and causal SDPA.

plan (which rows), calls (inputs and the op callables), flops (FLOP and byte models),
measure (timers, memory, peaks), report (ratios, targets, JSON/markdown/PNG), run (the CLI:
`python -m bench speed`).
"""
