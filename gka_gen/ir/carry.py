"""What crosses a sequence split: the carry rule of each state, read off the canonical form.

Over any slice of tokens a state evolves as S_end = A(S_start) + B (it is linear in the state
and in its input term). The context-parallel runtime (gka_gen.runtime.context_parallel) needs to
know, per state, how to get A and B for one slice and how to apply A:

- a state without delta rule, X_t = D_t X_{t-1} + c_t u_t w_t^T, is a *decayed sum*: A is the
  product of the decays D_t (1, a scalar, or one value per row channel) and B = sum_t (prod_{s>t}
  D_s) c_t u_t w_t^T, a reduction over the slice;
- a delta-rule state, X_t = (I - b_t u_t u_t^T) D_t X_{t-1} + b_t u_t w_t^T, carries an *operator*:
  A is the rows x rows matrix prod_t (I - b_t u_t u_t^T) D_t, which only the recurrence itself
  computes (the op from the identity with zero input).

`numbers` is what one rank sends per head for the state (A and B), in the spec's dims: it
involves no T.
"""
from __future__ import annotations

from ..symbolic.canonical import CanonicalForm


def carry_rules(cf: CanonicalForm) -> list[dict]:
    """One rule per state, in the spec's state order (plain data: it is rendered into ops.py)."""
    rules = []
    for s in cf.states:
        rows, cols = s.shape
        if s.delta:
            rules.append({"state": s.name, "rule": "operator", "key": s.input[0], "value": s.input[1],
                          "numbers": f"{rows}*{rows} + {rows}*{cols}"})
        else:
            a = {"none": "1", "scalar": "1", "channel": rows}[s.decay]
            rules.append({"state": s.name, "rule": "decayed_sum", "decay": s.decay, "gate": s.decay_gate,
                          "beta": s.beta, "input": list(s.input), "numbers": f"{a} + {rows}*{cols}"})
    return rules
