"""The OpenAI chat-completions wire format: the request as parsed, and the shapes the gateway writes and reads.

The bottom floor: no framework imports, used by every tier, the cache and the relay.
"""
