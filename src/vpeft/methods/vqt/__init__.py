"""Visual Query Tuning (Tu, Mai, Chao, CVPR 2023), the Head2Toe baseline and group lasso.

- `QueryTuning`: the VQT feature module (memory-efficient query pass over frozen K, V);
- `Head2ToeFeatures`: pooled intermediate features of a frozen ViT;
- `group_lasso_select`: stages B and C of the feature selection, on cached features.

The methods `vqt` and `head2toe` (vpeft.methods) install these modules.
"""

from .group_lasso import (
    GroupLassoResult,
    HeadTraining,
    column_norms,
    extract_features,
    group_lasso_penalty,
    group_lasso_select,
    install_selection,
    select_features,
    top_columns,
    train_head,
)
from .head import PRIOR_BIAS, SelectedLinear, normalize_groups
from .head2toe import Head2ToeFeatures, pool_tokens
from .query_layer import query_block
from .query_tuning import QueryTuning, query_init_bound

__all__ = [
    "PRIOR_BIAS",
    "GroupLassoResult",
    "Head2ToeFeatures",
    "HeadTraining",
    "QueryTuning",
    "SelectedLinear",
    "column_norms",
    "extract_features",
    "group_lasso_penalty",
    "group_lasso_select",
    "install_selection",
    "normalize_groups",
    "pool_tokens",
    "query_block",
    "query_init_bound",
    "select_features",
    "top_columns",
    "train_head",
]
