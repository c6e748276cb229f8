"""Inference on a backbone holding many named adapters: image decoding and preprocessing per
adapter (`inference`), the HTTP service (`app`, needs the ``serve`` extra)."""
