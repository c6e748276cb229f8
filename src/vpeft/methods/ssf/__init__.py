"""SSF: per-channel scale and shift (`scale_shift`) and its installer (`method`)."""
