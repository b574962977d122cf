"""Config, tenant lookup, tokens, and the threading decision."""
