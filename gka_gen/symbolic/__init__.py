"""sympy: canonical forms, exact references, proofs of the lowering rules."""
