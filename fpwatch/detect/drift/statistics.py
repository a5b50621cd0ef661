"""The statistics of drift detection, on plain counts and numbers: G, chi-square tails, TV, robust thresholds.

Exact and dependency-free: `chi2_logsf` works in logs so that far tails stay finite, and the permutation
test is the exact conditional test of G (research/detection-science.md section 8).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

HISTORY_MIN = 20  # below this many values of a statistic's history, only the absolute floors apply
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
PERMUTATIONS = 3000  # enough that the smallest p (1/3001) is under CONFIRM_ALPHA / 2

Table = tuple[Counter[str], Counter[str]]  # (reference counts, window counts) of one stratum


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions: the share of probability that moved."""
    return 0.5 * sum(abs(p.get(c, 0.0) - q.get(c, 0.0)) for c in set(p) | set(q))


def frequencies(outcomes: Iterable[str]) -> dict[str, float]:
    counts = Counter(outcomes)
    n = sum(counts.values())
    return {c: k / n for c, k in counts.items()} if n else {}


def g_statistic(reference: Mapping[str, int], window: Mapping[str, int]) -> tuple[float, int]:
    """The G (log-likelihood ratio) statistic of the 2 x C table reference-vs-window, and its degrees of freedom."""
    n_ref, n_win = sum(reference.values()), sum(window.values())
    if not n_ref or not n_win:
        return 0.0, 0
    total = n_ref + n_win
    g = 0.0
    categories = set(reference) | set(window)
    for c in categories:
        r, w = reference.get(c, 0), window.get(c, 0)
        column = r + w
        if r:
            g += r * math.log(r * total / (column * n_ref))
        if w:
            g += w * math.log(w * total / (column * n_win))
    return 2.0 * g, len(categories) - 1


def chi2_logsf(x: float, df: int) -> float:
    """ln P(X >= x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2), in logs."""
    if df <= 0 or x <= 0:
        return 0.0
    a, z = df / 2.0, x / 2.0
    log_prefix = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1.0:  # series for the lower function P, then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1.0
            term *= z / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        p = math.exp(log_prefix) * total
        return math.log1p(-p) if p < 1.0 else -math.inf
    # Continued fraction for Q (modified Lentz).
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return log_prefix + math.log(h)


def surprise(g: float, df: int) -> float:
    """-log10 of the chi-square p-value: 2 means p = 0.01, 6 means one in a million."""
    return -chi2_logsf(g, df) / math.log(10)


def robust_threshold(history: Sequence[float], k: float, floor: float) -> float:
    """max(floor, median + k * 1.4826 * MAD) over the model's own history; the floor alone while history is short."""
    if len(history) < HISTORY_MIN:
        return floor
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    return max(floor, median + k * MAD_SCALE * mad)


def g_of(strata: Iterable[Table]) -> tuple[float, int]:
    """The G statistic summed over these strata, with its degrees of freedom."""
    g_total, df_total = 0.0, 0
    for ref, win in strata:
        g, df = g_statistic(ref, win)
        g_total += g
        df_total += df
    return g_total, df_total


def permutation_p(
    strata: Sequence[Table],
    rng: random.Random,
    *,
    alpha: float,
    permutations: int = PERMUTATIONS,
    dispersion: float = 1.0,
) -> float:
    """The exact conditional p-value of `g_of(strata)`: window labels drawn again from each stratum's labels.

    With `dispersion` > 1 the observed G is divided by it first (serving noise wider than independent
    samples). Stops early once the p-value can no longer reach `alpha` (a burst of plain noise ends
    after a few dozen shuffles).
    """
    observed = g_of(strata)[0] / dispersion
    if not strata or observed <= 0:
        return 1.0
    prepared = []
    for ref, win in strata:
        totals = ref + win
        prepared.append((list(totals.elements()), win.total(), totals, ref.total()))
    limit = alpha * (permutations + 1)
    exceed = 0
    for done in range(1, permutations + 1):
        g = 0.0
        for labels, n_win, totals, n_ref in prepared:
            g += _g_given_margins(totals, Counter(rng.sample(labels, n_win)), n_ref, n_win)
        if g >= observed - 1e-9:
            exceed += 1
            if exceed + 1 > limit:
                return (exceed + 1) / (done + 1)
    return (exceed + 1) / (permutations + 1)


def _g_given_margins(totals: Mapping[str, int], win: Mapping[str, int], n_ref: int, n_win: int) -> float:
    total = n_ref + n_win
    g = 0.0
    for c, column in totals.items():
        w = win.get(c, 0)
        r = column - w
        if r:
            g += r * math.log(r * total / (column * n_ref))
        if w:
            g += w * math.log(w * total / (column * n_win))
    return 2.0 * g
