"""Gateway keys, rate limits and budgets per key and per team, shared by replicas through Redis.

`gateway.limits.build.build_limits` turns `LimitSettings` into a `Limiter` (None when limits are off: then nothing
of this package runs on the request path); `gateway.build.build_gateway` wraps the dispatcher in a `LimitLayer`
with it and gives its `KeyDirectory` to `gateway.auth.KeyChecker`. See docs/limits.md.
"""
