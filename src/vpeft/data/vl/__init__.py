"""Vision-language data: the procedural visual-question suite (`synthetic`), readers for VQA v2,
NLVR2, Flickr30k (Karpathy) and class folders with names (`readers`), model-ready datasets
(`datasets`), VQA answers and soft scores (`answers`) and the suite's tokenizer (`tokenizer`).

transformers and tokenizers are needed for the text side; they are imported when a tokenizer is
first loaded.
"""

from .answers import normalize_answer, soft_score, soft_targets, top_answers
from .datasets import (
    ArrayImages,
    ClassImageDataset,
    FileImages,
    Nlvr2Dataset,
    RetrievalDataset,
    VqaDataset,
)
from .readers import base_new_split, class_folder, flickr30k, nlvr2, vqa_v2, vqa_v2_answers
from .synthetic import (
    base_classes,
    classes_split,
    generate_all,
    load_part,
    new_classes,
    nlvr2_split,
    retrieval_split,
    vqa_split,
)
from .tokenizer import encode, load_tokenizer, write_tokenizer

__all__ = [
    "ArrayImages",
    "ClassImageDataset",
    "FileImages",
    "Nlvr2Dataset",
    "RetrievalDataset",
    "VqaDataset",
    "base_classes",
    "base_new_split",
    "class_folder",
    "classes_split",
    "encode",
    "flickr30k",
    "generate_all",
    "load_part",
    "load_tokenizer",
    "new_classes",
    "nlvr2",
    "nlvr2_split",
    "normalize_answer",
    "retrieval_split",
    "soft_score",
    "soft_targets",
    "top_answers",
    "vqa_split",
    "vqa_v2",
    "vqa_v2_answers",
    "write_tokenizer",
]
