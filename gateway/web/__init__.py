"""The HTTP side: health, status, metrics and the magic-link pages with their texts."""
