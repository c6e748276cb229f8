"""CLIP text-prompt methods: zero-shot CLIP, CoOp, CoCoOp (`classifier` holds the modules,
`method` the configs and registrations)."""
