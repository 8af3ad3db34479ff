"""Per-GPU launch configs of the generated kernels: search, store, look up.

    gka-gen autotune specs/*.yaml [--shapes ...] [--budget-min N]     (on a GPU)

- configs.py  the config space of every tunable kernel (what the search tries)
- cache.py    the file format autotune/<GPU>/<spec>-<spec hash>.json, its loader, shape buckets
- lookup.py   what the generated kernels call at launch: tuned config for this GPU and shape, or
              the kernel's default (no GPU work, never a search unless GKA_GEN_AUTOTUNE=1)
- prefilter.py  drops candidates that do not fit sm_90 (gka_gen.resources) before any timing
- tune.py     the search itself: time each candidate, verify it against the default's output

Only lookup.py and cache.py are imported by a generated package; both import no torch at module
level, so `import generated.<name>` costs nothing extra.
"""
