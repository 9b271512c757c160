"""Developer tools: a fake OpenAI-compatible upstream, a scripted in-process tier (`FakeBackend`), and helpers
to run servers as subprocesses.

Nothing here is used by the gateway at run time; tests and benchmarks use it.
"""
