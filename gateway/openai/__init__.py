"""The OpenAI wire formats: chat completions (the request as parsed, the shapes the gateway writes and reads), and
the Responses, legacy completions, embeddings and models shapes with their translations.

The bottom floor: no framework imports, used by every tier, the cache and the relay.
"""
