"""Build the procedural VL suite's word-level tokenizer.

    python scripts/build_vl_tokenizer.py [OUT]   # default: src/vpeft/assets/vl_synth_tokenizer.json

OUT may be a ``.json`` file or a folder (receives ``tokenizer.json``, loadable with
``PreTrainedTokenizerFast(tokenizer_file=...)`` or `vpeft.data.vl.load_tokenizer(folder)`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from vpeft.data.vl.tokenizer import BUNDLED_TOKENIZER, write_tokenizer

DEFAULT = Path(__file__).resolve().parents[1] / "src" / "vpeft" / "assets" / BUNDLED_TOKENIZER

if __name__ == "__main__":
    out = write_tokenizer(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
