"""The embedded default dataset: a seeded order-k Markov source whose entropy rate is known exactly.

Definition (``MarkovSource(order=k, vocab=V, alpha, seed)``):

* symbols ``0..V-1``; a *context* is the last ``k`` symbols, encoded base V as ``c = x_{t-k+1}·V^{k-1} + … + x_t``
  (``V^k`` contexts; the oldest symbol is the most significant digit);
* each context's next-symbol distribution ``P[c, :]`` is an independent draw from ``Dirichlet(alpha·1_V)``, made
  with ``numpy.random.default_rng(seed)``, so the source is a pure function of ``(order, vocab, alpha, seed)``;
* the context chain moves ``c -> (c·V + x) mod V^k``. Its stationary distribution ``pi`` is computed exactly
  (a dense linear solve for up to 2,048 contexts, otherwise power iteration on the lazy chain to 1e-14), and the
  entropy rate is ``H = sum_c pi[c] · H(P[c, :])`` bits per symbol;
* the text rendering maps symbol ``i`` to ``ALPHABET[i]`` (``'a'..'z'`` then ``'A'..'F'`` for V = 32), one ASCII
  byte per symbol, so bits per symbol = bits per byte and the byte tokenizer yields one token per symbol.
  The floor is ``floor_ppl = 2**H`` per byte (the perplexity an oracle that knows ``P`` would reach).

Sampling runs many independent chains in parallel (vectorised over chains, a Python loop over time steps only),
each started from the stationary distribution, and concatenates them. At each of the ``n_chains - 1`` junctions the
next symbol follows the stationary marginal instead of ``P[c, :]``; chains are at least 8,192 symbols long, so at
most 1/8,192 of transitions are affected and the floor is off by under ``log2(V)/8192`` ≈ 0.0006 bits — negligible,
and it can only make the data *harder* than the stated floor for a model that ignores the junctions.
"""
from __future__ import annotations

import functools
import string

import numpy as np

from harness.data.base import SPLITS, Corpus

ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~"
_ALPHABET_CODES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)

# The synthetic-markov dataset (its own fixed seed: independent of the benchmark's --seed).
DATASET_SEED = 20_251_121
DEFAULT_VOCAB = 32
DEFAULT_ORDER = 1
DEFAULT_ALPHA = 0.2
SPLIT_SIZES = {"train": 2_000_000, "valid": 100_000, "test": 100_000}
MIN_CHAIN_LEN = 8_192
MAX_CHAINS = 256
_DENSE_MAX_STATES = 2_048


def _row_entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each row, with 0·log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1)


class MarkovSource:
    """A seeded order-``order`` Markov source over ``vocab`` symbols (see the module docstring)."""

    def __init__(
        self,
        order: int = DEFAULT_ORDER,
        vocab: int = DEFAULT_VOCAB,
        alpha: float = DEFAULT_ALPHA,
        seed: int = 0,
        *,
        transitions: np.ndarray | None = None,
    ) -> None:
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        if vocab < 1:
            raise ValueError(f"vocab must be >= 1, got {vocab}")
        n_states = vocab**order
        if n_states * vocab > 50_000_000:
            raise ValueError(f"order {order} at vocab {vocab} has {n_states:,} contexts: too large")
        self.order, self.vocab, self.alpha, self.seed = order, vocab, float(alpha), seed
        self.n_states = n_states
        if transitions is None:
            rng = np.random.default_rng(seed)
            transitions = rng.dirichlet(np.full(vocab, float(alpha)), size=n_states)
        p = np.asarray(transitions, dtype=np.float64)
        if p.shape != (n_states, vocab):
            raise ValueError(f"transitions must have shape {(n_states, vocab)}, got {p.shape}")
        if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-9):
            raise ValueError("transition rows must be probability distributions")
        self.transitions = p / p.sum(axis=1, keepdims=True)

    @classmethod
    def from_transitions(cls, transitions: np.ndarray, order: int = 1) -> "MarkovSource":
        """A source with explicit rows ``transitions[context, next]`` (for tests: uniform, deterministic...)."""
        t = np.asarray(transitions, dtype=np.float64)
        return cls(order=order, vocab=t.shape[1], alpha=float("nan"), seed=-1, transitions=t)

    # ---- exact quantities -------------------------------------------------------------------------------
    @functools.cached_property
    def stationary(self) -> np.ndarray:
        """Stationary distribution of the context chain (length ``V^k``)."""
        n, v = self.n_states, self.vocab
        if self.order == 0:
            return np.ones(1)
        if n <= _DENSE_MAX_STATES:
            # T[c, c'] = P[c, x] with c' = (c·V + x) mod V^k; solve pi (T - I) = 0, sum(pi) = 1.
            t = np.zeros((n, n))
            nxt = (np.arange(n)[:, None] * v + np.arange(v)[None, :]) % n
            np.add.at(t, (np.repeat(np.arange(n), v), nxt.ravel()), self.transitions.ravel())
            a = t.T - np.eye(n)
            a[-1, :] = 1.0
            b = np.zeros(n)
            b[-1] = 1.0
            try:
                pi = np.linalg.solve(a, b)
            except np.linalg.LinAlgError:  # reducible chain (e.g. deterministic cycles): any stationary pi
                pi = np.linalg.lstsq(a, b, rcond=None)[0]
            pi = np.clip(pi, 0.0, None)
            return pi / pi.sum()
        # Large context spaces: power iteration on the lazy chain (same stationary distribution, aperiodic).
        pi = np.full(n, 1.0 / n)
        p3 = self.transitions.reshape(v, n // v, v)  # [oldest symbol a, rest b, next x]
        for _ in range(100_000):
            step = np.einsum("ab,abx->bx", pi.reshape(v, n // v), p3).reshape(n)
            new = 0.5 * (pi + step)
            if np.abs(new - pi).sum() < 1e-14:
                pi = new
                break
            pi = new
        return pi / pi.sum()

    def entropy_rate_bits(self) -> float:
        """Exact entropy rate ``sum_c pi[c] H(P[c, :])`` in bits per symbol."""
        h = float(np.dot(self.stationary, _row_entropy_bits(self.transitions)))
        return max(h, 0.0)

    def floor_ppl(self) -> float:
        """The per-symbol (= per-byte) perplexity floor ``2**entropy_rate_bits``."""
        return float(2.0 ** self.entropy_rate_bits())

    def context_entropy_bits(self) -> list[float]:
        """``H_c = H(X_{c+1} | X_1..X_c)`` under stationarity for c = 0 .. order (``H_order`` is the entropy rate).

        Why: a symbol scored with only c < order symbols of context (the start of an evaluation window, or of an
        independent chain) cannot be predicted better than ``H_c``; the reachable floor of a protocol averages these.
        """
        v, k = self.vocab, self.order
        if k == 0:
            return [self.entropy_rate_bits()]
        joint = self.stationary[:, None] * self.transitions  # P(context k-gram, next), oldest symbol most significant
        out = []
        for c in range(k + 1):
            pbx = joint.reshape(v ** (k - c), v ** c * v).sum(axis=0)  # marginalise the k - c oldest symbols
            pb = pbx.reshape(v ** c, v).sum(axis=1)
            out.append(max(0.0, _entropy_bits(pbx) - _entropy_bits(pb)))
        out[-1] = self.entropy_rate_bits()
        return out

    def surprisal_std_bits(self) -> float:
        """Standard deviation of ``-log2 p(x_t | context)`` under the source itself: the sampling noise of the
        optimal predictor's mean loss is this over sqrt(n)."""
        t = self.transitions
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(t > 0, -np.log2(np.where(t > 0, t, 1.0)), 0.0)
        second = float(np.dot(self.stationary, (t * s * s).sum(axis=1)))
        return float(np.sqrt(max(0.0, second - self.entropy_rate_bits() ** 2)))

    def chain_stride(self, n: int) -> int:
        """``sample(n)`` concatenates independent chains of this many symbols (the last one may be shorter)."""
        n_chains = int(min(MAX_CHAINS, max(1, n // MIN_CHAIN_LEN)))
        return -(-n // n_chains) + self.order

    # ---- sampling -----------------------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` symbols (uint8 if V <= 256 else int64) from independent stationary chains, concatenated."""
        rng = np.random.default_rng(rng)
        if n <= 0:
            return np.zeros(0, dtype=np.uint8 if self.vocab <= 256 else np.int64)
        v, k, n_states = self.vocab, self.order, self.n_states
        n_chains = int(min(MAX_CHAINS, max(1, n // MIN_CHAIN_LEN)))
        length = -(-n // n_chains)
        cdf = np.cumsum(self.transitions, axis=1)
        cdf[:, -1] = 1.0
        out = np.empty((n_chains, length + k), dtype=np.int64)
        if k > 0:
            state = rng.choice(n_states, size=n_chains, p=self.stationary)
            # Unpack the starting contexts into their k symbols (oldest first) so they are part of each chain.
            for j in range(k):
                out[:, j] = (state // v ** (k - 1 - j)) % v
        else:
            state = np.zeros(n_chains, dtype=np.int64)
        u = 1.0 - rng.random((length, n_chains))  # in (0, 1]: symbols with probability 0 are never drawn
        for t in range(length):
            x = (cdf[state] < u[t][:, None]).sum(axis=1)
            np.minimum(x, v - 1, out=x)
            out[:, k + t] = x
            state = (state * v + x) % n_states
        seq = out.reshape(-1)[:n]
        return seq.astype(np.uint8) if v <= 256 else seq

    def render(self, symbols: np.ndarray) -> str:
        """Symbols -> text, one printable ASCII character per symbol."""
        if self.vocab > len(ALPHABET):
            raise ValueError(f"text rendering supports vocab <= {len(ALPHABET)}, got {self.vocab}")
        return _ALPHABET_CODES[np.asarray(symbols, dtype=np.int64)].tobytes().decode("ascii")

    def sample_text(self, n: int, rng: np.random.Generator | int | None = None) -> str:
        return self.render(self.sample(n, rng))

    def __repr__(self) -> str:
        return f"MarkovSource(order={self.order}, vocab={self.vocab}, alpha={self.alpha}, seed={self.seed})"


def empirical_conditional_entropy_bits(symbols: np.ndarray, order: int, vocab: int) -> float:
    """Plug-in estimate of H(X_t | X_{t-k..t-1}) from counts of one sequence (bits per symbol)."""
    s = np.asarray(symbols, dtype=np.int64)
    if order == 0:
        counts = np.bincount(s, minlength=vocab).astype(np.float64)
        return float(_row_entropy_bits(counts / counts.sum()))
    ctx = np.zeros(len(s) - order, dtype=np.int64)
    for j in range(order):
        ctx = ctx * vocab + s[j : len(s) - order + j]
    nxt = s[order:]
    counts = np.bincount(ctx * vocab + nxt, minlength=vocab ** (order + 1)).reshape(-1, vocab).astype(np.float64)
    tot = counts.sum(axis=1)
    used = tot > 0
    rows = counts[used] / tot[used, None]
    return float(np.dot(tot[used] / tot.sum(), _row_entropy_bits(rows)))


@functools.lru_cache(maxsize=8)
def _synthetic_splits(order: int, vocab: int, alpha: float, seed: int) -> tuple[tuple[str, str], ...]:
    src = MarkovSource(order=order, vocab=vocab, alpha=alpha, seed=seed)
    out = []
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 1 + i])  # one independent stream per split
        out.append((split, src.sample_text(SPLIT_SIZES[split], rng)))
    return tuple(out)


def synthetic_corpus(
    order: int = DEFAULT_ORDER,
    vocab: int = DEFAULT_VOCAB,
    alpha: float = DEFAULT_ALPHA,
    seed: int = DATASET_SEED,
    name: str = "synthetic-markov",
) -> Corpus:
    """The ``synthetic-markov`` corpus: train 2,000,000 / valid 100,000 / test 100,000 symbols (memoised)."""
    src = MarkovSource(order=order, vocab=vocab, alpha=alpha, seed=seed)
    h = src.entropy_rate_bits()
    return Corpus(
        name=name,
        splits=dict(_synthetic_splits(order, vocab, float(alpha), seed)),
        source="embedded",
        word_level=False,
        entropy_rate_bits=h,
        meta={
            "generator": "order-k Markov source, Dirichlet transition rows",
            "order": order,
            "vocab": vocab,
            "alpha": float(alpha),
            "seed": seed,
            "alphabet": ALPHABET[:vocab],
            "entropy_rate_bits": h,
            "floor_bpb": h,
            "floor_ppl": float(2.0**h),
            "unigram_entropy_bits": float(_row_entropy_bits(_unigram(src))),
            "context_entropy_bits": src.context_entropy_bits(),
            "surprisal_std_bits": src.surprisal_std_bits(),
            "chain_stride": {split: src.chain_stride(n) for split, n in SPLIT_SIZES.items()},
        },
    )


def _entropy_bits(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64).ravel()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _unigram(src: MarkovSource) -> np.ndarray:
    """Stationary marginal of the next symbol (what a model that ignores context can reach)."""
    return src.stationary @ src.transitions
