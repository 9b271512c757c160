"""OpenAI wire formats and their translations (framework-free)."""
