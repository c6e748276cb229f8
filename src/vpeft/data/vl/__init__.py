"""Vision-language data."""
