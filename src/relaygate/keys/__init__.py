"""API keys: generation, hashing, and the in-memory cache that authenticates requests."""

from relaygate.keys.cache import KeyCache, bearer_token
from relaygate.keys.tokens import display_prefix, hash_key, new_key, new_key_id

__all__ = ["KeyCache", "bearer_token", "display_prefix", "hash_key", "new_key", "new_key_id"]
