"""The semantic cache layer: a paraphrase of a cached prompt, in the same hard scope, gets the cached answer.

Pieces: `scope` (what must be equal), `guard` (which words must agree), `index` (vectors per scope, in-process
or on Redis), `cache` (`SemanticCache.lookup` / `store`, fail-open within a deadline) and `calibrate` (the
per-embedder threshold from labelled pairs).
"""
