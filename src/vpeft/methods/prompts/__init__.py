"""Prompt methods: prompt tokens / extra keys and values (`layers`), VPT and prefix tuning."""
