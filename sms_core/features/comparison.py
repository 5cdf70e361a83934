"""Two sources of the same features compared by the schema's rules: integers and texts exactly, ratios
to float32."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sms_core.features.schema import FEATURES

FIRST_IDS = 10
# Request-time and batch values may differ by float32 rounding at most; with both sides in float64 from
# one function they are in practice identical, which `max_difference` shows.
RATIO_RTOL = float(np.finfo(np.float32).eps)


def mismatches(left: pd.DataFrame, right: pd.DataFrame) -> tuple[pd.Series, dict[str, float]]:
    """Per row, whether any feature differs (integers and texts exactly, ratios within float32
    precision); the largest difference of each numeric feature."""
    differs = pd.Series(False, index=left.index)
    max_difference = {}
    for column, kind in FEATURES.items():
        if not kind.numeric:
            differs |= left[column].to_numpy() != right[column].to_numpy()
            continue
        a, b = left[column].to_numpy(dtype=np.float64), right[column].to_numpy(dtype=np.float64)
        rtol = 0.0 if kind.exact else RATIO_RTOL
        differs |= ~np.isclose(a, b, rtol=rtol, atol=0.0)
        max_difference[column] = float(np.max(np.abs(a - b))) if len(a) else 0.0
    return differs, max_difference


def first_ids(ids: pd.Index | pd.Series | np.ndarray) -> list[int]:
    return [int(i) for i in np.asarray(ids)[:FIRST_IDS]]
