"""Learning from traffic: shadow judging and explicit feedback produce label rows for retraining the router.

- `finished`: what a finished request leaves behind (the one hook: `Learning.offer(finished)`).
- `judge`: the judge protocol (one json_schema chat completion grading both answers).
- `labels`: label rows (the training format of `dev.jsonl` plus provenance) and where they are written.
- `budget`: the daily cap on judging spend.
- `recent`: recent requests remembered for feedback.
- `shadow`: the sampler (on the request path: one draw, one non-blocking put) and the background worker.
- `feedback`: `POST /v1/feedback`.
- `service`: `Learning`, which wires them for one app.
"""
