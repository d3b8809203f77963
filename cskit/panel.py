"""The account × month panel: the base of every metric and model (docs/architecture.md, "The panel").

One row per account and month, from the contract's start month to its churn month (inclusive) or to
``as_of``. Months are contiguous per account, so within an account the row position equals ``tenure``;
``add_lags`` relies on that.
"""
from __future__ import annotations

import mmap
import sys
from functools import partial

import numpy as np
import pandas as pd

from cskit.client import ClientData
from cskit.parallel import Beside
from cskit.season import COLUMNS as SEASON_COLUMNS
from cskit.season import GLM_MODULE as SEASON_GLM
from cskit.season import churn_seasonality, season_column
from cskit.season import remember as remember_season

_EPOCH = np.datetime64("1970-01", "M")
# The fewest events an outcome model is fitted on: the triggers, the potential's models, the health score
# and the seasonality test all read this one floor (below it an outcome is "not_estimable").
MIN_EVENTS = 20


def month_index(dates: pd.Series) -> np.ndarray:
    """Whole months since 1970-01 of each date (NaT → -1)."""
    numpy_dates = isinstance(getattr(dates, "dtype", None), np.dtype) and dates.dtype.kind == "M"
    d = dates if numpy_dates else pd.to_datetime(dates)  # (to_datetime boxes a sample of datetimes to decide)
    if isinstance(d.dtype, np.dtype):  # tz-naive: numpy's month unit, no calendar fields
        v = np.asarray(d)
        if v.dtype == np.dtype("datetime64[ns]"):
            return _month_index_ns(v)
        return np.where(np.isnat(v), -1, v.astype("datetime64[M]").astype(np.int64))
    out = ((d.dt.year - 1970) * 12 + d.dt.month - 1).to_numpy(dtype="float64")
    return np.where(np.isnan(out), -1, out).astype(np.int64)


def _month_index_ns(v: np.ndarray) -> np.ndarray:
    """:func:`month_index` of datetime64[ns] values: each day's month read from a table of the days the
    values span (numpy's conversion to months does calendar arithmetic per value, 3x slower)."""
    nat = np.isnat(v)
    days = np.floor_divide(v.view(np.int64), 86_400 * 10**9)  # (numpy's own floor to whole days)
    seen = days[~nat] if nat.any() else days
    if not len(seen) or int(seen.max()) - int(seen.min()) > 10_000_000:
        return np.where(nat, -1, v.astype("datetime64[M]").astype(np.int64))
    low, high = int(seen.min()), int(seen.max())
    table = np.arange(low, high + 1).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    out = table[np.clip(days - low, 0, high - low)]
    out[nat] = -1
    return out


def month_start(index: np.ndarray) -> np.ndarray:
    """First day of month for month indices since 1970-01 (inverse of ``month_index``)."""
    index = np.asarray(index, dtype="int64")
    if index.size > 64:  # each month converted once (numpy's conversion does calendar arithmetic per value)
        low, high = int(index.min()), int(index.max())
        if high - low < index.size:
            return month_start(np.arange(low, high + 1))[index - low]
    return (_EPOCH + index.astype("timedelta64[M]")).astype("datetime64[ns]")


def kpi_columns(data: ClientData) -> list[str]:
    """The KPI columns of the panel, in a fixed order: contract_months, static, panel KPIs, nps."""
    cols = ["contract_months", *data.static_kpis, *table_kpis(data)]
    if data.nps is not None and len(data.nps):
        cols.append("nps")
    return list(dict.fromkeys(cols))


def table_kpis(data: ClientData) -> list[str]:
    """The KPI columns of ``data.kpis``: every column but account_id and month, in the table's order."""
    return [c for c in data.kpis.columns if c not in ("account_id", "month")]


def build_panel(data: ClientData) -> pd.DataFrame:
    """Build the account × month panel of ``data`` (columns: docs/architecture.md)."""
    acc = data.accounts  # (the loader's: sorted by id, every account kept, usually; the frame's index is not read)
    if not acc["account_id"].is_monotonic_increasing:
        acc = acc.sort_values("account_id", kind="stable").reset_index(drop=True)
    as_of = int(month_index(pd.Series([data.as_of]))[0])
    start = month_index(acc["contract_start"])
    churn_m = churn_months(acc)
    churned = (churn_m >= 0) & (churn_m <= as_of)
    end = np.where(churned, churn_m, as_of)
    keep = (start <= as_of) & (end >= start)
    if not keep.all():
        acc, start, end, churned = acc[keep].reset_index(drop=True), start[keep], end[keep], churned[keep]

    n = (end - start + 1).astype(np.int64)
    row_acc = np.repeat(np.arange(len(acc)), n)
    first_row = np.repeat(np.cumsum(n) - n, n)
    tenure = np.arange(n.sum()) - first_row
    mi = start[row_acc] + tenure

    # the columns, in their order, made first and framed once at the end, the float ones written into one
    # block (no copy per column added, no consolidation of the whole panel later)
    kpi_cols = table_kpis(data)
    panel = _Columns(len(tenure), 7 + len(data.static_kpis) + len(kpi_cols))
    panel |= {
        "account_id": acc["account_id"].to_numpy()[row_acc],
        "month": month_start(mi),
        "tenure": tenure,
        "segment": acc["segment"].to_numpy()[row_acc],
        "plan": acc["plan"].to_numpy()[row_acc],
        "contract_type": acc["contract_type"].to_numpy()[row_acc],
    }
    is_last = tenure == (n - 1)[row_acc]
    churn = is_last & churned[row_acc]
    panel["churn"] = churn.astype(np.int8)
    annual = is_annual(acc["contract_type"].to_numpy())[row_acc]  # (compared once per account)
    cycle = renewal_cycle(tenure[churn & annual])
    panel["renewal_cycle"] = np.where(annual, cycle, 1).astype(np.int64)
    renewal = (tenure % cycle == 0) & (tenure > 0)  # (read for annual rows only: at_risk has every other month)
    # delayed entry: an account is in a risk set only from the month the data window shows it
    window = window_start(data)
    panel["months_observed"] = mi - np.maximum(start[row_acc], window if window >= 0 else start[row_acc])
    panel["at_risk"] = (~annual | renewal | churn) & (panel["months_observed"] >= 0)
    rows = {c: panel[c] for c in SEASON_COLUMNS}  # what the season test reads (arrays, not framed)
    # the test (its GLM fits: LAPACK; numpy's work on large arrays) made by a thread while the other columns
    # are made, where the libraries it imports are imported already (two threads importing one package at
    # once can be handed a partly initialised module); else made in turn: the same result either way
    test = Beside(partial(churn_seasonality, rows, MIN_EVENTS), "cskit-season",
                  start=all(_imported(m) for m in (SEASON_GLM, "scipy.stats")))
    panel["churn_season"] = None  # (its place in the column order; written when the test is done)
    try:
        _add_accounts_columns(panel, acc, data, kpi_cols, n, start, mi, tenure, row_acc)
    except BaseException:
        test.join()  # (no thread outlives the panel; the test is not made for a panel that failed)
        raise
    season = test.result()
    panel["churn_season"] = season_column(rows, season)
    del rows
    frame = panel.frame()
    remember_season(frame, MIN_EVENTS, season)  # read by cskit.season.tested: the test made once per panel
    return frame


def _imported(name: str) -> bool:
    """Module ``name`` is imported, its import finished (not one another thread is still running)."""
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


# The columns _add_revenue and _add_referrals make, in their order (float: a row of the float block).
_REVENUE_COLUMNS = (("mrr", True), ("mrr_prev", True), ("expansion", False), ("expansion_mrr", True),
                    ("contraction", False), ("contraction_mrr", True), ("cross_sell", False), ("referrals", False),
                    ("referral_mrr", True))


def _add_accounts_columns(panel: _Columns, acc: pd.DataFrame, data: ClientData, kpi_cols: list[str], n: np.ndarray,
                          start: np.ndarray, mi: np.ndarray, tenure: np.ndarray, row_acc: np.ndarray) -> None:
    """The panel's columns after the churn season: revenue, referrals, contract months, static and
    time-varying KPIs, trailing NPS. The KPIs and the NPS are gathered by a thread (:class:`cskit.parallel.Beside`)
    while this one makes the others (numpy's work on large arrays releases the interpreter): every
    column's place (and float row) is taken first, in the order the columns are made one after the
    other, so the frame is the same, and each thread writes only its own columns."""
    ids = pd.Index(acc["account_id"])  # the panel's (sorted, unique) account ids, in its row order
    if ids.is_unique:  # each row's account: its position among them
        at = _Rows(np.cumsum(n) - n, start, n)
    else:  # (a frame built otherwise than by the loader)
        ids = pd.Index(pd.unique(panel["account_id"]))
        at = _Rows.by_key(_keys(ids.get_indexer(panel["account_id"]), mi))
    nps = data.nps is not None and len(data.nps)
    floats = [*(name for name, _ in _REVENUE_COLUMNS), "contract_months", *data.static_kpis, *kpi_cols,
              *(["nps"] if nps else [])]
    together = len(set(floats)) == len(floats) and not any(c in panel for c in floats)  # (else made in turn)
    if together:
        for name, is_float in [*_REVENUE_COLUMNS, *((c, True) for c in floats[len(_REVENUE_COLUMNS):])]:
            panel.take_place(name, is_float)
    beside = Beside(lambda: _add_kpis_and_nps(panel, data, ids, at, nps), "cskit-panel", start=together)
    try:
        revenue_codes = _add_revenue(panel, data, ids, at)
        _add_referrals(panel, acc, data, ids, at, revenue_codes)
        np.copyto(panel.float_row("contract_months", fill=None), tenure)
        for col in data.static_kpis:
            values = pd.to_numeric(acc[col], errors="coerce").to_numpy(dtype="float64")
            np.take(values, row_acc, out=panel.float_row(col, fill=None))
    except BaseException:
        beside.join()  # (no thread outlives the panel)
        raise
    beside.result()
    missing = [name for name, is_float in _REVENUE_COLUMNS if not is_float and dict.__getitem__(panel, name) is None]
    if missing:  # (a column whose place was taken but was not made)
        raise RuntimeError(f"panel columns not made: {missing}")


def _add_kpis_and_nps(panel: _Columns, data: ClientData, ids: pd.Index, at: _Rows, nps: bool) -> None:
    _add_kpis(panel, data, ids, at)
    if nps:
        _trailing_nps(panel, data.nps, ids, at)


class _Rows:
    """Where each (account, month) of a table is in the panel: account ``c`` (its position among the
    panel's accounts) holds rows ``first[c]`` … ``first[c] + n[c] − 1``, for the months ``start[c]`` …
    (months since 1970-01). :meth:`by_key` addresses a panel whose rows are not so (accounts sharing an
    id): by each row's account × month key, found by binary search."""

    def __init__(self, first: np.ndarray, start: np.ndarray, n: np.ndarray):
        self.first, self.start, self.n = first, start, n
        self.size = int(n.sum())
        self.keyed = False  # addressed by key (:meth:`by_key`)
        self._keys: np.ndarray | None = None

    @classmethod
    def by_key(cls, pkeys: np.ndarray) -> "_Rows":
        out = cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        out.size, out.keyed, out._keys = len(pkeys), True, pkeys
        return out

    def keys(self) -> np.ndarray:
        """Each panel row's account × month key (:func:`_keys`)."""
        if self._keys is None:
            tenure = np.arange(self.size) - np.repeat(self.first, self.n)
            self._keys = _keys(np.repeat(np.arange(len(self.n)), self.n), np.repeat(self.start, self.n) + tenure)
        return self._keys

    def rows(self, codes: np.ndarray, mi: np.ndarray) -> np.ndarray:
        """The panel row of each (account position, month index); -1 where the panel has none (addressed
        by key: the first row of the key)."""
        if self.keyed:
            keys, pkeys = _keys(codes, mi), self._keys
            pos = np.minimum(np.searchsorted(pkeys, keys), max(self.size - 1, 0))
            found = (pkeys[pos] == keys) & (codes >= 0) if self.size else np.zeros(len(codes), dtype=bool)
            return np.where(found, pos, -1)
        if not len(self.n):
            return np.full(len(codes), -1)
        c = np.clip(codes, 0, len(self.n) - 1)
        off = mi - self.start[c]
        return np.where((codes >= 0) & (off >= 0) & (off < self.n[c]), self.first[c] + off, -1)

    def put(self, codes: np.ndarray, mi: np.ndarray, *values: np.ndarray, fill: float = 0.0,
            out: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, ...]:
        """Each value array summed per panel row (:func:`group_sums`: pandas' arithmetic, a key's rows in
        their order), ``fill`` where a row has none or its sum is NaN: ``groupby(keys).sum()`` reindexed to
        the panel (written into the arrays ``out`` when given)."""
        out = tuple(np.empty(self.size) for _ in values) if out is None else out
        if self.keyed:
            ok = codes >= 0
            keys, *sums = group_sums(_keys(codes[ok], mi[ok]), *(v[ok] for v in values))
            for o, v in zip(out, sums):
                o[:] = lookup(self._keys, keys, v, fill)
            return out
        row = self.rows(codes, mi)
        hit = row >= 0
        every = bool(hit.all())  # (every table row in the panel: taken as they are)
        at, *sums = group_sums(row if every else row[hit], *(v if every else v[hit] for v in values))
        for o, v in zip(out, sums):
            o.fill(fill)
            v[np.isnan(v)] = fill
            o[at] = v
        return out

    def mark(self, keys: np.ndarray) -> np.ndarray:
        """Panel rows whose account × month key (:func:`_keys`) is among the sorted ``keys`` (a mask)."""
        if self.keyed:
            if not len(keys):
                return np.zeros(self.size, dtype=bool)
            return keys[np.minimum(np.searchsorted(keys, self._keys), len(keys) - 1)] == self._keys
        row = self.rows(*_unkeys(keys))
        out = np.zeros(self.size, dtype=bool)
        out[row[row >= 0]] = True
        return out


def mapped_block(shape: tuple[int, int]) -> np.ndarray:
    """``np.empty(shape)`` (float64) whose memory is mapped in one go (Linux ``MAP_POPULATE``, 4 kB pages),
    for an array about to be written whole. numpy asks for huge pages for large arrays, which the kernel
    assembles (compacting memory) on first touch: 0.3-0.6 s of system time for the 0.44 GB float block
    of a 100k-account panel on the 2-core VM, 0.11 s mapped at once. Elsewhere: ``np.empty``."""
    size = int(np.prod(shape)) * 8
    if size < 1 << 24 or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(shape)
    try:
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    except OSError:  # (no memory to map at once: numpy's own allocation decides)
        return np.empty(shape)
    return np.frombuffer(buf, dtype=np.float64).reshape(shape)


class _Columns(dict):
    """The panel's columns by name, in their order; float64 ones are written into one preallocated
    (columns × rows) block, which becomes the frame's float block as it is (:meth:`frame`)."""

    def __init__(self, rows: int, floats: int):
        super().__init__()
        self.block = mapped_block((floats, rows))
        self.rows: dict[str, int] = {}  # a float column's row of the block

    def __setitem__(self, name: str, values) -> None:
        values = np.asarray(values)
        row = self.rows.get(name)
        if values.dtype == np.float64 and values.ndim == 1 and (row is not None or len(self.rows) < len(self.block)):
            if row is None:
                row = self.rows[name] = len(self.rows)
            self.block[row] = values
            values = self.block[row]
        elif row is not None:  # (a float column replaced by one of another type: never in build_panel)
            raise TypeError(f"panel column {name!r} changed type")
        super().__setitem__(name, values)

    def float_row(self, name: str, fill: float | None = np.nan) -> np.ndarray:
        """Column ``name``'s row of the float block, to be written in place (made if new), filled with
        ``fill`` (None: left as it is, for the caller to write every value)."""
        if name not in self:
            if len(self.rows) < len(self.block):
                row = self.rows[name] = len(self.rows)
                dict.__setitem__(self, name, self.block[row])
            else:  # (more float columns than the block holds)
                self[name] = np.empty(self.block.shape[1])
        x = self.block[self.rows[name]] if name in self.rows else dict.__getitem__(self, name)
        if fill is not None:
            x.fill(fill)
        return x

    def take_place(self, name: str, is_float: bool) -> None:
        """Column ``name``'s place in the order (a float column: its row of the block, left as it is; else
        None until it is set)."""
        if is_float:
            self.float_row(name, fill=None)
        else:
            dict.__setitem__(self, name, None)

    def __ior__(self, other: dict):
        for k, v in other.items():
            self[k] = v
        return self

    def frame(self) -> pd.DataFrame:
        """The frame: the float block as its float block, each other column as a block of its own, none
        copied (``DataFrame.insert`` copies the column it inserts: 0.13 GB at 100k accounts)."""
        names = [k for k in self if k in self.rows]  # in the columns' order
        rows = [self.rows[k] for k in names]
        block = self.block[: len(names)] if rows == list(range(len(names))) else self.block[rows]
        if not hasattr(pd.DataFrame, "_from_mgr"):  # (pandas < 2.1, below the pin: built column by column)
            out = pd.DataFrame(block.T, columns=names, copy=False)
            for pos, (name, values) in enumerate(self.items()):
                if name not in self.rows:
                    out.insert(pos, name, values)
            return out
        from pandas.core.internals import BlockManager
        from pandas.core.internals.api import make_block

        columns = list(self)
        blocks = [make_block(block, placement=[columns.index(k) for k in names])] if names else []
        blocks += [make_block(np.asarray(v).reshape(1, -1), placement=[pos])
                   for pos, (k, v) in enumerate(self.items()) if k not in self.rows]
        mgr = BlockManager(blocks, [pd.Index(columns), pd.RangeIndex(self.block.shape[1])])
        return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)


CYCLES = (12, 6, 3)  # renewal cycles (months) a non-monthly contract may have; each divides the first
CYCLE_AIC = 2.0  # a cycle (one parameter, π) must beat "any month" (none) by Akaike's criterion


def renewal_cycle(churn_tenures: np.ndarray, candidates=CYCLES) -> int:
    """Renewal cycle (months) of the non-monthly contracts, read from the tenures at which they churn.

    Clients label 6-month (or quarterly) terms "annual" and mix terms across accounts; assuming 12
    would put a 6-month churn outside every renewal month. Each churn's tenure modulo 12 is one of 12
    residues; cycle c says a share π of churns falls on its residues (multiples of c), evenly, and the
    rest (early terminations) evenly on the others. The cycle is the candidate with the highest
    maximised likelihood (ties: the longest), kept when it beats "churns in any month" (uniform
    residues) by Akaike's criterion (2·Δ log-likelihood > 2 for its one parameter) with π above the
    uniform share; else 1 (every month).
    12 (the label) when none has churned yet.
    A mix of 12- and 6-month terms reads as 6: every decision month of either term is then at risk.
    """
    t = np.asarray(churn_tenures)
    t = t[t > 0]
    if len(t) == 0:
        return candidates[0]
    period = candidates[0]
    counts = np.bincount(t % period, minlength=period).astype(float)
    n = counts.sum()
    uniform = n * np.log(1.0 / period)
    best, best_ll = None, -np.inf
    for c in candidates:
        on = np.arange(period) % c == 0
        k, size = counts[on].sum(), on.sum()
        pi = k / n
        if pi <= size / period:
            continue
        ll = k * np.log(pi / size) + ((n - k) * np.log((1 - pi) / (period - size)) if k < n else 0.0)
        if ll > best_ll + 1e-9:
            best, best_ll = c, ll
    if best is not None and 2 * (best_ll - uniform) > CYCLE_AIC:
        return best
    return 1


def is_annual(values: np.ndarray) -> np.ndarray:
    """Which ``contract_type`` values are annual contracts: the values compared as they are (a value that
    is not a string is not "annual" as text either), not converted to text first; as text where one
    cannot be compared (pandas' NA)."""
    try:
        return np.asarray(values == "annual", dtype=bool)
    except TypeError:
        return np.asarray(values).astype(str) == "annual"


def renewal_cycles(frame: pd.DataFrame) -> np.ndarray:
    """Each row's months between churn decisions: the panel's ``renewal_cycle`` (1 for monthly
    contracts); for a frame without it, 12 for annual contracts and 1 otherwise."""
    if "renewal_cycle" in frame:
        return frame["renewal_cycle"].to_numpy(dtype="int64")
    annual = is_annual(frame["contract_type"].to_numpy()) if "contract_type" in frame else False
    return np.where(annual, CYCLES[0], 1).astype("int64") * np.ones(len(frame), dtype="int64")


def annual_cycle(panel: pd.DataFrame) -> int:
    """The renewal cycle of the non-monthly contracts in ``panel`` (``renewal_cycle``; 12 if there are none)."""
    if "renewal_cycle" not in panel or "contract_type" not in panel:
        return CYCLES[0]
    annual = np.flatnonzero(is_annual(panel["contract_type"].to_numpy()))
    return int(panel["renewal_cycle"].to_numpy()[annual[0]]) if len(annual) else CYCLES[0]


def decides(tenure: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """True where an account with renewal cycle ``cycle`` (1 = every month) can churn at ``tenure``
    (a future month's tenure; every stage's projection reads the cycle this way)."""
    return np.asarray(tenure) % np.asarray(cycle) == 0


# Fewest churns (and renewals) at observed renewal decisions for the term contracts' renewal hazard: the
# events-per-variable rule of 10 (Peduzzi et al. 1996) for its one term (contract type) in the churn model.
MIN_RENEWAL_EVENTS = 10


def renewal_evidence(panel: pd.DataFrame, lag: int, min_events: int = MIN_RENEWAL_EVENTS) -> dict:
    """Can the data tell the churn probability of the non-monthly contracts at a renewal?

    A term contract churns (almost) only at its renewals, so its renewal hazard is learnt from the
    renewal decisions the model rows hold (``outcome_rows``: at-risk, month t − lag inside the contract
    and the data window; a renewal month, tenure a multiple of the cycle). With no such decision (a
    panel shorter than one term, a window that ends before the first anniversaries) or fewer than
    ``min_events`` churns or renewals among them, the data cannot tell it: any figure would come from
    the monthly contracts (far too low) or from a separated fit (0 or 1). ``estimable`` says which; code
    "renewal_not_observed" then, "renewals_observed" otherwise, "no_term_contracts" without any.
    """
    term = np.zeros(0, dtype=bool)
    if "contract_type" in panel:  # each type (as text) compared once; an account's rows are a run
        kind, kinds = factorize_runs(panel["contract_type"].to_numpy())
        term = np.append(pd.Series(kinds, dtype=object).astype(str).to_numpy() != "monthly", True)[kind]
    accounts = len(factorize_runs(panel["account_id"].to_numpy()[term])[1]) if term.any() else 0  # (nunique)
    out = {"code": "no_term_contracts", "estimable": True, "accounts": accounts, "cycle": None,
           "decisions": 0, "churns": 0, "renewals": 0, "min_events": int(min_events)}
    if not accounts:
        return out
    rows, _ = outcome_rows(panel, "churn", lag)
    tenure = panel["tenure"].to_numpy()
    cycle = renewal_cycles(panel)
    decision = rows & term & (tenure > 0) & decides(tenure, cycle)
    churns = int(panel["churn"].to_numpy()[decision].sum())
    renewals = int(decision.sum()) - churns
    estimable = min(churns, renewals) >= min_events
    out.update(code="renewals_observed" if estimable else "renewal_not_observed", estimable=bool(estimable),
               cycle=int(cycle[term][0]), decisions=int(decision.sum()), churns=churns, renewals=renewals)
    return out


def churn_months(accounts: pd.DataFrame) -> np.ndarray:
    """Month index of each account's churn decision (-1 without a churn date): the month of its
    ``churn_date``, except that a non-monthly contract's churn dated the day before an anniversary day
    (the term's last day: 2025-03-31 for a term from 2024-04-01, as clients with April fiscal years
    record it) belongs to that anniversary's month. Every stage reads churn months from the panel, so
    this is the one place the rule lives."""
    churn = _wall_dates(accounts["churn_date"])
    after = month_index(churn + np.timedelta64(1, "D"))
    return np.where(term_end_dated(accounts), after, month_index(churn))


def term_end_dated(accounts: pd.DataFrame) -> np.ndarray:
    """Non-monthly accounts whose churn_date is the day before an anniversary day of contract_start
    (the day of the month clipped to the month's length: a contract from the 31st renews on the 30th in
    30-day months)."""
    churn = _wall_dates(accounts["churn_date"])
    start = _wall_dates(accounts["contract_start"])
    nxt = churn + np.timedelta64(1, "D")
    anniversary_day = np.minimum(_day_of_month(start), _days_in_month(nxt))
    annual = accounts["contract_type"].astype(str).to_numpy() != "monthly"
    ok = ~np.isnat(churn) & ~np.isnat(start)
    return ok & annual & (_day_of_month(nxt) == anniversary_day) & (month_index(nxt) > month_index(start))


def _wall_dates(column: pd.Series) -> np.ndarray:
    """A date column as datetime64[ns] wall-clock times (a time-zone-aware one in its own zone)."""
    d = column if isinstance(column.dtype, np.dtype) and column.dtype.kind == "M" else pd.to_datetime(column)
    if not isinstance(d.dtype, np.dtype):
        d = d.dt.tz_localize(None)
    return d.to_numpy(dtype="datetime64[ns]")


def _day_of_month(dates: np.ndarray) -> np.ndarray:
    """Day of the month (1–31) of each date (garbage where NaT)."""
    return (dates.astype("datetime64[D]") - dates.astype("datetime64[M]")).astype(np.int64) + 1


def _days_in_month(dates: np.ndarray) -> np.ndarray:
    """Number of days of each date's month (garbage where NaT)."""
    month = dates.astype("datetime64[M]")
    return ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64)


def window_start(data: ClientData) -> int:
    """Month index of the first month of the data window: the earliest revenue or KPI month (-1 if none)."""
    firsts = [_first_month(t["month"]) for t in (data.revenue, data.kpis) if t is not None and len(t)]
    return int(min(firsts)) if firsts else -1


def _first_month(dates: pd.Series) -> int:
    """``month_index(dates).min()``: the month of the earliest date (-1 with a NaT), one date converted."""
    v = dates.to_numpy()
    if not (v.dtype.kind == "M" and len(v)) or np.isnat(v).any():
        return int(month_index(dates).min())
    return int(month_index(v.min(keepdims=True))[0])


def data_window(data: ClientData) -> dict:
    """How the data window relates to the contracts (left truncation, ``quality.json`` → ``data_window``).

    Accounts whose contract started before the first data month were customers before anything was
    recorded; they enter the risk sets only from that month (delayed entry, :func:`build_panel`).
    When none of them ended before the window, the export most likely lists only the accounts
    active in it (``only_active_listed``): accounts lost earlier are missing, which delayed entry
    handles as well (every model conditions on being a customer at entry).
    """
    first = window_start(data)
    acc = data.accounts
    start = month_index(acc["contract_start"])
    churn = churn_months(acc)
    before = (start >= 0) & (start < first)
    ended_before = before & (churn >= 0) & (churn < first)
    n_before = int(before.sum())
    return {
        "code": "left_truncation" if n_before else "window_covers_contracts",
        "first_month": str(month_start(np.array([first]))[0])[:7] if first >= 0 else None,
        "accounts": int(len(acc)),
        "started_before_window": n_before,
        "share_started_before_window": round(n_before / len(acc), 4) if len(acc) else 0.0,
        "ended_before_window": int(ended_before.sum()),
        "only_active_listed": bool(n_before > 0 and not ended_before.any()),
        "handling": "delayed entry: accounts enter the churn models at the first data month; "
                    "tenure from contract_start",
    }


KEY_MONTHS = 100_000  # an account × month key: account code × KEY_MONTHS + month index + KEY_MONTHS // 2


def _keys(account_codes: np.ndarray, mi: np.ndarray) -> np.ndarray:
    """Account × month keys, in account then month order (month indexes within ±KEY_MONTHS / 2 months of
    1970, before it too)."""
    return account_codes.astype(np.int64) * KEY_MONTHS + (mi + KEY_MONTHS // 2)


def _unkeys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The account codes and month indexes of :func:`_keys`' keys."""
    code, month = np.divmod(keys, KEY_MONTHS)
    return code, month - KEY_MONTHS // 2


def factorize_runs(values: np.ndarray, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(values, sort=sort)``, each run of equal values hashed once: the panel and the
    loader's tables hold an account's rows together, so a table of 1.5M rows has ~100k runs."""
    v = np.asarray(values)
    starts = _run_starts(v)
    if starts is None:
        return pd.factorize(v, sort=sort)
    codes, uniques = pd.factorize(v[starts], sort=sort)
    return np.repeat(codes, np.diff(np.append(starts, len(v)))), uniques


def run_starts(v: np.ndarray) -> np.ndarray:
    """Where each run of equal values of ``v`` starts (in order; none for no value): the panel and the
    loader's tables hold an account's rows together, so a run is an account's rows."""
    new = np.ones(len(v), dtype=bool)
    new[1:] = v[1:] != v[:-1]
    return np.flatnonzero(new)


def _run_starts(v: np.ndarray) -> np.ndarray | None:
    """:func:`run_starts`; None when ``v`` is not in runs (more than one run per four values, or fewer
    than two values): then a per-value pass is as cheap."""
    if len(v) < 2:
        return None
    starts = run_starts(v)
    return None if 4 * len(starts) > len(v) else starts


def _codes(ids: pd.Index, values: pd.Series) -> np.ndarray:
    """``ids.get_indexer(values)``, each run of equal values looked up once (the loader's tables are
    sorted by account: a few lookups per account instead of one per row)."""
    v = values.to_numpy()
    starts = _run_starts(v)
    if starts is None:
        return ids.get_indexer(v)
    return np.repeat(ids.get_indexer(v[starts]), np.diff(np.append(starts, len(v))))


def group_sums(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(sorted distinct keys, each value array summed per key): ``groupby(keys).sum()`` with pandas'
    own arithmetic (Kahan-compensated, the rows of a key in their order), computed for all keys at once
    position by position within the keys (a key holds a few rows: an account-month's products)."""
    if len(keys) > 1 and not (keys[1:] >= keys[:-1]).all():
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], tuple(v[order] for v in values)
    first = run_starts(keys)
    size = np.diff(np.append(first, len(keys)))
    out = []
    for v in values:
        v = np.asarray(v, dtype="float64")
        # a key's first row: 0 + v, compensation 0 (v − v, or NaN reset to 0 for an infinite value)
        total = v[first] if len(first) < len(v) else v.copy()
        total += 0.0
        comp, g = np.zeros(len(first)), None
        for j in range(1, int(size.max()) if len(size) else 0):  # (inf − inf: NaN, as pandas')
            g = np.flatnonzero(size > j) if g is None else g[size[g] > j]  # the keys with a (j+1)-th row
            y = v[first[g] + j] - comp[g]
            with np.errstate(invalid="ignore"):
                t = total[g] + y
                c = t - total[g] - y
            c[np.isnan(c)] = 0.0  # (an infinite value: pandas resets the compensation)
            comp[g], total[g] = c, t
        out.append(total)
    return (keys[first], *out)


def lookup(panel_keys: np.ndarray, keys: np.ndarray, values: np.ndarray, fill=0.0) -> np.ndarray:
    """``values`` (at the sorted distinct ``keys``) at each panel key, ``fill`` where absent or NaN (as
    ``Series(values, keys).reindex(panel_keys).fillna(fill)``), by binary search."""
    if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
        s = pd.Series(values, index=keys)
        return s.reindex(panel_keys).fillna(fill).to_numpy()
    pos = np.minimum(np.searchsorted(keys, panel_keys), max(len(keys) - 1, 0))
    found = keys[pos] == panel_keys if len(keys) else np.zeros(len(panel_keys), dtype=bool)
    if found.all():
        out = values[pos]
    else:
        out = np.full(len(panel_keys), np.nan)
        out[found] = values[pos[found]]
    if out.dtype.kind == "f":
        out[np.isnan(out)] = fill
    return out


def _add_revenue(panel: _Columns, data: ClientData, ids: pd.Index, at: _Rows) -> np.ndarray:
    """MRR and its movements (expansion, contraction, cross-sell) at each panel row (``panel``: the
    columns so far); returns each revenue row's account position in ``ids`` (-1 if not in the panel)."""
    rev = data.revenue
    codes = _codes(ids, rev["account_id"])
    rmi = month_index(rev["month"])
    (mrr,) = at.put(codes, rmi, rev["mrr"].to_numpy(dtype="float64"), out=(panel.float_row("mrr", fill=None),))
    first = panel["tenure"] == 0
    prev = panel.float_row("mrr_prev", fill=None)
    prev[0:1] = 0.0
    prev[1:] = mrr[:-1]
    prev[first] = 0.0
    up = (mrr > prev) & (prev > 0)
    down = (mrr < prev) & (mrr > 0)
    panel["expansion"] = up.astype(np.int8)
    np.subtract(mrr, prev, out=panel.float_row("expansion_mrr", fill=0.0), where=up)
    panel["contraction"] = down.astype(np.int8)
    np.subtract(prev, mrr, out=panel.float_row("contraction_mrr", fill=0.0), where=down)
    hit = at.mark(_cross_sell_keys(rev, codes, rmi, codes >= 0))
    panel["cross_sell"] = (hit & ~first).astype(np.int8)
    return codes


def _cross_sell_keys(rev: pd.DataFrame, codes: np.ndarray, rmi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The account × month keys in which an account's revenue shows a product for the first time, after
    its first month with revenue (sorted, unique)."""
    product = rev["product"].to_numpy() if "product" in rev else np.full(len(rev), "(main)", dtype=object)
    every = bool(ok.all())
    code, mi = (codes, rmi) if every else (codes[ok], rmi[ok])
    key = _keys(code, mi)
    names, _ = factorize_runs(product if every else product[ok])
    if len(key) > 1 and (key[1:] >= key[:-1]).all() and (names >= 0).all():  # the loader's order
        # (account, month, product): a line's first row is its first month, an account's first row its
        # first month with revenue
        line, _ = factorize_runs(code.astype(np.int64) * (int(names.max()) + 1) + names)
        seen = np.maximum.accumulate(line)
        new_line = np.append(True, seen[1:] > seen[:-1])
        starts = run_starts(code)
        account_first = np.repeat(mi[starts], np.diff(np.append(starts, len(code))))
        return np.unique(key[new_line & (mi > account_first)])
    firsts = (
        pd.DataFrame({"code": code, "product": product[ok], "mi": mi})
        .groupby(["code", "product"], sort=False)["mi"]
        .min()
        .reset_index()
    )
    account_first = firsts.groupby("code")["mi"].transform("min")
    new_lines = firsts[firsts["mi"] > account_first]
    return np.unique(_keys(new_lines["code"].to_numpy(), new_lines["mi"].to_numpy()))


def _add_referrals(panel: _Columns, acc: pd.DataFrame, data: ClientData, ids: pd.Index, at: _Rows,
                   revenue_codes: np.ndarray) -> None:
    panel["referrals"] = referrals = np.zeros(at.size, dtype=np.int64)
    referral_mrr = panel.float_row("referral_mrr", fill=0.0)
    if "referred_by" not in acc:
        return
    named = acc[acc["referred_by"].notna()]
    ref = named[named["referred_by"].astype(str) != ""]
    if ref.empty:
        return
    codes = ids.get_indexer(ref["referred_by"].astype(str))
    start = month_index(ref["contract_start"])
    rev = data.revenue
    referred = ids.get_indexer(ref["account_id"])
    if (referred >= 0).all():  # panel accounts: their revenue rows by code (no text lookup per row)
        first_mrr = _first_mrr(rev[np.isin(revenue_codes, referred)])
    else:
        first_mrr = _first_mrr(rev[rev["account_id"].isin(ref["account_id"])])  # only the referred accounts'
    mrr = ref["account_id"].map(first_mrr).fillna(0.0).to_numpy(dtype="float64")
    at.put(codes, start, np.ones(len(codes)), mrr, out=(referrals, referral_mrr))


def _first_mrr(revenue: pd.DataFrame) -> pd.Series:
    """Each account's MRR in its first month with revenue."""
    by = revenue.groupby(["account_id", "month"], sort=True)["mrr"].sum().reset_index()
    return by.groupby("account_id")["mrr"].first()


def _add_kpis(panel: _Columns, data: ClientData, ids: pd.Index, at: _Rows) -> None:
    """Each kpis column at the panel's account-months (NaN where no row): one position per panel row,
    then one column at a time, gathered straight into the panel's float block (no second copy of the
    whole table)."""
    kp = data.kpis
    cols = table_kpis(data)
    if not cols:
        return
    codes = _codes(ids, kp["account_id"])
    row = at.rows(codes, month_index(kp["month"]))
    source = np.flatnonzero(row >= 0)  # the kpi rows in the panel, and the panel row of each
    row = row[source]
    if not at.keyed and len(row) and (row[1:] > row[:-1]).all():  # the loader's order, one row each
        every = len(row) == at.size  # a KPI row for every panel row
        gaps = np.zeros(0, dtype=np.int64)
        if not every:
            inverse = np.zeros(at.size, dtype=np.int64)
            inverse[row] = source
            seen = np.zeros(at.size, dtype=bool)
            seen[row] = True
            source, gaps = inverse, np.flatnonzero(~seen)
        whole = every and len(source) == len(kp)  # (and every KPI row in the panel: the column itself)
        for c in cols:
            column, x = kp[c].to_numpy(dtype="float64"), panel.float_row(c, fill=None)
            if whole:
                np.copyto(x, column)
            else:
                np.take(column, source, out=x, mode="clip")  # (valid positions; unbuffered)
            x[gaps] = np.nan
        return
    ok = codes >= 0
    keys = pd.Index(_keys(codes[ok], month_index(kp["month"])[ok]))
    pkeys = at.keys()
    if not keys.is_unique:  # the loader keeps one row per account-month; a table built otherwise: their mean
        values = kp.loc[ok, cols].astype("float64")
        values.index = keys
        aligned = values.groupby(level=0).mean().reindex(pkeys)
        for c in cols:
            panel[c] = aligned[c].to_numpy()
        return
    pos = keys.get_indexer(pkeys)
    found = pos >= 0
    source = np.flatnonzero(ok)[pos[found]]
    for c in cols:
        x = panel.float_row(c)
        x[found] = kp[c].to_numpy(dtype="float64")[source]


def _trailing_nps(panel: _Columns, nps: pd.DataFrame, ids: pd.Index, at: _Rows, window: int = 12) -> None:
    """The panel's ``nps``: the mean 0–10 score of the answers given in the trailing ``window`` months
    (NaN if none)."""
    codes = _codes(ids, nps["account_id"])
    s, n = at.put(codes, month_index(nps["date"]), nps["score"].to_numpy(float), np.ones(len(nps)))
    tenure = panel["tenure"]
    cs, cn = _within_account_window_sum(s, tenure, window), _within_account_window_sum(n, tenure, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(cs, cn, out=panel.float_row("nps"), where=cn > 0)


def _within_account_window_sum(x: np.ndarray, tenure: np.ndarray, window: int) -> np.ndarray:
    """Sum of x over the current and previous window−1 months of the same account."""
    cs = np.concatenate([[0.0], np.cumsum(x)])
    first = np.arange(len(x)) - np.minimum(tenure, window - 1)  # each row's window's first row
    return cs[1:] - cs[first]


# Every outcome a model of cskit is fitted to (rows and event: ``outcome_rows``); each stage models a
# subset (triggers.TRIGGER_OUTCOMES, potential.PROJECTED).
OUTCOMES = ("churn", "renewal", "expansion", "downgrade", "referral")


def active_rows(panel: pd.DataFrame, month: pd.Timestamp) -> np.ndarray:
    """Rows of accounts active at ``month`` (boolean mask): a panel row in that month, not churned then,
    MRR > 0. These are the accounts every projection and score is made for."""
    return ((panel["month"] == pd.Timestamp(month)) & (panel["churn"] == 0) & (panel["mrr"] > 0)).to_numpy()


RECENT_MONTHS = 3  # "future KPI values are each account's mean over its last 3 observed months" (DESIGN §5)


def recent_means(panel: pd.DataFrame, kpis: list[str], rows: np.ndarray, n: int = RECENT_MONTHS) -> pd.DataFrame:
    """For each selected panel row: each KPI's mean over the account's last ``n`` non-missing values up to
    and including that row (NaN if none); ``contract_months`` is the tenure of the row itself.

    The panel must be sorted by account and month with contiguous months (``build_panel`` guarantees it).
    """
    return recent_means_over(panel, kpis, rows, (n,))[n]


def recent_means_over(panel: pd.DataFrame, kpis: list[str], rows: np.ndarray, ns: tuple[int, ...]
                      ) -> dict[int, pd.DataFrame]:
    """:func:`recent_means` for each window ``n`` of ``ns`` at once (one pass over each KPI's values).

    A mean is the difference of two running sums of the KPI's non-missing values, taken in the panel's
    row order (numpy's sequential ``cumsum``): at the row and at the last value seen before the window."""
    pos = np.flatnonzero(rows)
    start = pos - panel["tenure"].to_numpy()[pos]  # the account's first row
    ids = panel["account_id"].to_numpy()[pos]
    out = {n: {"account_id": ids, **dict.fromkeys(kpis)} for n in ns}  # (the columns in the order of kpis)
    if "contract_months" in kpis:
        for n in ns:
            out[n]["contract_months"] = panel["contract_months"].to_numpy(dtype="float64")[pos]
    summed = [k for k in kpis if k != "contract_months"]
    running = np.empty(len(panel), dtype="complex128") if summed else None  # one buffer for every KPI's sums
    for i in range(0, len(summed), 2):  # two KPIs' running sums at once: the real and imaginary parts
        pair = summed[i : i + 2]
        gaps = _running_sums([panel[k].to_numpy(dtype="float64") for k in pair], running)
        for k, kgaps, sums in zip(pair, gaps, (running.real, running.imag)):
            seen, own, prev = _seen_counts(kgaps, pos, start)
            upto = sums[pos]  # (a missing value's running sum is the one before it)
            for n in ns:
                take = np.minimum(own, n)
                before = seen - take  # values seen before the window: the running sum at the last of them,
                at = pos - take  # the row before the window where the window has no gap
                gappy = np.flatnonzero(prev > at)
                at[gappy] = _nth_seen(kgaps, np.maximum(before[gappy], 1))
                low = np.where(before > 0, sums[np.maximum(at, 0)], 0.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[n][k] = np.where(take > 0, (upto - low) / np.maximum(take, 1), np.nan)
    return {n: pd.DataFrame(v) for n, v in out.items()}


def _running_sums(xs: list[np.ndarray], out: np.ndarray, chunk: int = 1 << 17) -> list[np.ndarray]:
    """``out.real`` := the running sum of the finite values of ``xs[0]`` up to each position, in order (numpy's
    sequential ``cumsum`` of them, held through the missing values after each), ``out.imag`` that of ``xs[1]``
    (zeros without one); returns the positions of each one's values that are not finite (missing), in order.

    One ``cumsum`` of the complex ``out`` makes both: its parts are two independent sequential sums (the same
    additions, bit for bit, as each one's own ``cumsum``), and the processor runs the two chains side by side
    (two KPIs' sums in about the time of one). Chunk by chunk (each one's pieces of work while it is in the
    cache), each chunk's sums continuing the last one's."""
    parts, carry = [[] for _ in xs], None
    with np.errstate(invalid="ignore", over="ignore"):  # (inf − inf: found at the end)
        for s in range(0, len(out), chunk):
            o = out[s : s + chunk]
            if len(xs) == 1:
                o.imag = 0.0
            for x, o_part, found in zip(xs, (o.real, o.imag), parts):
                np.copyto(o_part, x[s : s + chunk])
                gaps = np.flatnonzero(np.isnan(o_part))  # (NaN: all but a few; an infinite value is found below)
                if len(gaps):
                    o_part[gaps] = -0.0  # adds nothing to any sum, not even to a −0.0
                    found.append(gaps + s)
            if carry is not None:
                o[0] += carry  # (carry + the chunk's first value: the next step of the sequential sum)
            np.cumsum(o, out=o)
            carry = o[-1]
    found = [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]
    for j, (x, sums) in enumerate(zip(xs, (out.real, out.imag))):
        if len(sums) and not np.isfinite(sums[-1]):  # an infinite value (or a sum beyond the float range)
            found[j] = np.flatnonzero(~np.isfinite(x))
            np.copyto(sums, x)
            sums[found[j]] = -0.0
            with np.errstate(invalid="ignore", over="ignore"):
                np.cumsum(sums, out=sums)
    return found


def _seen_counts(gaps: np.ndarray, pos: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows ``pos`` (increasing) of accounts starting at rows ``start``, of an array whose missing
    values are at ``gaps``: the values seen up to each row (from position 0), those seen in its account
    and each row's last gap (-1: none)."""
    # gaps up to each row: each gap counted at the first row at or after it (one search per gap)
    behind = np.cumsum(np.bincount(np.searchsorted(pos, gaps), minlength=len(pos) + 1)[: len(pos)])
    seen = pos + 1 - behind
    prev = np.append(-1, gaps)[behind]
    own = pos - start + 1
    gappy = np.flatnonzero(prev >= start)  # a gap in the account so far (the others: a value each row)
    own[gappy] = seen[gappy] - _seen_upto(gaps, start[gappy] - 1)
    return seen, own, prev


def _last_seen(gaps: np.ndarray, pos: np.ndarray, start: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_seen_counts`' values seen in each row's account, and the positions of its 1st, 2nd, ...
    ``n``-th last value seen (rows × n; meaningful where that many were seen)."""
    seen, own, prev = _seen_counts(gaps, pos, start)
    last = np.maximum(pos[:, None] - np.arange(n), 0)  # no gap in the last n rows: the rows themselves
    near = np.flatnonzero(prev > pos - n)
    last[near] = _nth_seen(gaps, np.maximum(seen[near, None] - np.arange(n), 1))
    return own, last


def _seen_upto(gaps: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Finite values at positions 0..``at`` (inclusive) of an array whose non-finite ones are at ``gaps``."""
    return at + 1 - np.searchsorted(gaps, at, side="right")


def _nth_seen(gaps: np.ndarray, nth: np.ndarray) -> np.ndarray:
    """Position of the ``nth`` (1, 2, ...) finite value of an array whose non-finite ones are at ``gaps``:
    nth − 1 plus the gaps before it (a gap is before it when fewer than nth finite values precede the gap)."""
    return nth - 1 + np.searchsorted(gaps - np.arange(len(gaps)), nth - 1, side="right")


def recent_missing(panel: pd.DataFrame, kpis: list[str], rows: np.ndarray, n: int = RECENT_MONTHS
                   ) -> dict[str, np.ndarray]:
    """For each selected panel row: the share of the account's last ``n`` months up to and including that
    row (fewer at the contract's start) in which each KPI has no value: the expected value of its missing
    indicator in a future month (``cskit.models.with_indicators``), read the same way by the potential and
    the health score."""
    pos = np.flatnonzero(rows)
    tenure = panel["tenure"].to_numpy()[pos]
    out = {}
    for k in kpis:
        gap = panel[k].isna().to_numpy()
        total, count = np.zeros(len(pos)), np.zeros(len(pos))
        for j in range(n):
            ok = tenure >= j
            total[ok] += gap[pos[ok] - j]
            count[ok] += 1
        out[k] = total / np.maximum(count, 1)
    return out


def recent_values(
    panel: pd.DataFrame, kpis: list[str], rows: np.ndarray, n: int = RECENT_MONTHS
) -> dict[str, np.ndarray]:
    """The values behind :func:`recent_means`: for each selected row and KPI, the account's last ``n``
    non-missing values up to and including that row, oldest first (rows × n, NaN-padded in front)."""
    pos = np.flatnonzero(rows)
    start = pos - panel["tenure"].to_numpy()[pos]  # the account's first row
    out = {}
    for k in kpis:
        x = panel[k].to_numpy(dtype="float64")
        own, last = _last_seen(np.flatnonzero(~np.isfinite(x)), pos, start, n)
        # column n − 1 − j holds the (j + 1)-th last observed value
        out[k] = np.where(own[:, None] > np.arange(n)[::-1], x[last[:, ::-1]], np.nan)
    return out


def outcome_rows(panel: pd.DataFrame, outcome: str, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Model rows (boolean mask over the panel) and the 0/1 outcome on them, for every model of the kit.

    Rows need month t − lag inside the contract and the data window (tenure ≥ lag and
    months_observed ≥ lag: delayed entry of accounts that started before the data): an event is
    explained only by KPIs measured before it. churn / renewal: at-risk rows (every month of a monthly
    contract, the renewal months of an annual one, the churn month), renewal = 1 − churn; expansion (incl. cross-sell),
    downgrade (contraction) and referral: months after the first, with MRR the month before and no
    churn (an account that leaves in a month does not grow, shrink or refer in it).
    """
    tenure = panel["tenure"].to_numpy()
    observed = panel["months_observed"].to_numpy() if "months_observed" in panel else tenure
    history = (tenure >= lag) & (observed >= lag)
    churn = panel["churn"].to_numpy().astype(bool)
    if outcome in ("churn", "renewal"):
        rows = panel["at_risk"].to_numpy().astype(bool) & history
        y = churn if outcome == "churn" else ~churn
    elif outcome in ("expansion", "downgrade", "referral"):
        rows = (tenure > 0) & (panel["mrr_prev"].to_numpy() > 0) & ~churn & history
        if outcome == "expansion":
            y = (panel["expansion"].to_numpy() > 0) | (panel["cross_sell"].to_numpy() > 0)
        elif outcome == "downgrade":
            y = panel["contraction"].to_numpy() > 0
        else:
            y = panel["referrals"].to_numpy() > 0
    else:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    return rows, y[rows].astype("float64")


def add_lags(panel: pd.DataFrame, columns: list[str], lag: int) -> pd.DataFrame:
    """Values of ``columns`` at month t − ``lag`` of the same account (NaN where before its start)."""
    values = panel[columns].to_numpy(dtype="float64")
    if lag == 0:
        return pd.DataFrame(values, index=panel.index, columns=columns)
    shifted = np.full_like(values, np.nan)
    shifted[lag:] = values[:-lag]
    shifted[panel["tenure"].to_numpy() < lag] = np.nan
    return pd.DataFrame(shifted, index=panel.index, columns=columns)
