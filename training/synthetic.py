"""Synthetic account activity: logins and card payments over 90 days, with fraud in the events.

`generate_activity(payments, seed)` is deterministic (the same seed and size give byte-identical
files); `activity_chunks` gives the same records a chunk at a time, for histories too long to hold.
Ids carry the seed and the size (`p-7-60000-00000001`, `acct-7-60000-000308`): histories of
another seed or size are other accounts and other events, so one feature store or training
folder can hold several without an id meaning two things.
Accounts log in and pay in sessions; now and then a login fails (a typo) or a customer pays
abroad, at night or from a new device. Fraud arrives in episodes the account's history gives
away only through its aggregates:

- account takeover (most fraud): a burst of failed logins within minutes, a successful login,
  then a run of payments, often from a new device and abroad, in risky categories;
- a stolen card used directly: a quick run of payments abroad without any login.

Each payment is labelled (`is_fraud`); no aggregate is written into the data. A model learns
the bursts only through the features the system computes from the logins and payments before
each payment (`sds.kernel.aggregates`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sds.kernel.aggregates import MINUTE, SECOND
from sds.kernel.errors import SdsError
from sds.kernel.features import CURRENCIES, MERCHANT_CATEGORIES, USD_PER_UNIT

LABEL = "is_fraud"
START = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z
SPAN = 90 * 24 * 60 * MINUTE

_COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "MX", "BR", "IN", "JP", "AU", "SG")
_COUNTRY_WEIGHTS = np.array([30, 10, 8, 7, 5, 5, 4, 6, 4, 5, 6, 4, 3, 3], dtype=float)
_COUNTRY_CURRENCY = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "ES": "EUR", "IT": "EUR", "NL": "EUR",
    "CA": "CAD", "MX": "MXN", "BR": "BRL", "IN": "INR", "JP": "JPY", "AU": "AUD", "SG": "SGD",
}  # fmt: skip
_CATEGORY_WEIGHTS = np.array([0.22, 0.18, 0.10, 0.06, 0.07, 0.17, 0.07, 0.02, 0.05, 0.06])
_FRAUD_CATEGORY_WEIGHTS = np.array([0.03, 0.03, 0.02, 0.10, 0.30, 0.17, 0.22, 0.08, 0.02, 0.03])
_CATEGORY_MEDIAN_USD = np.array([45, 30, 50, 420, 300, 70, 15, 60, 25, 40], dtype=float)
# Quiet nights, busy evenings (UTC hour of the session).
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.5, 3, 4, 5, 5, 6, 7, 6, 6, 6, 6, 7, 8, 8, 7, 5, 3, 2], float
)

_CURRENCY_CODE = {code: i for i, code in enumerate(CURRENCIES)}
_RATES = np.array([USD_PER_UNIT[code] for code in CURRENCIES])

FRAUD_SHARE = 0.03  # of payments, roughly
PAYMENTS_PER_ACCOUNT = 25
CHUNK = 50_000  # records built at a time when streaming


class TooMany(SdsError):
    """More payments than this machine can draw at once (numpy could not allocate or index
    the columns): an error naming the count, not a traceback from numpy."""


def _choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _session_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """Session start times: a day, then an hour by the daily shape, then a second."""
    day = rng.integers(0, 90, size=size)
    hour = _choice(rng, _HOUR_WEIGHTS, size)
    second = rng.integers(0, 3600, size=size)
    jitter = rng.integers(0, SECOND, size=size)
    return np.asarray(START + (day * 86400 + hour * 3600 + second) * SECOND + jitter)


def generate_activity(payments: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """About `payments` labelled payments and the logins around them, in time order."""
    return [record for chunk in activity_chunks(payments, seed=seed) for record in chunk]


def activity_chunks(
    payments: int, *, seed: int = 7, chunk: int = CHUNK
) -> Iterator[list[dict[str, Any]]]:
    """`generate_activity`'s records, in time order, `chunk` at a time (arguments are checked
    when called, before anything is drawn).

    The draws are made for every event at once, as numeric columns (the peak is about 200 bytes
    per payment: 849 MiB for 4M, 2.9 GiB for 16M); records exist only a chunk at a time, so `sds generate` writes
    a long history without holding it (the records, about 2 KB each, were what filled memory).
    """
    if payments < 1:
        raise ValueError("payments must be >= 1")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    return _within_memory(payments, _activity(payments, seed, chunk))


def _within_memory(
    payments: int, chunks: Iterator[list[dict[str, Any]]]
) -> Iterator[list[dict[str, Any]]]:
    # The draws are made for every payment at once: a count beyond memory fails in numpy with
    # MemoryError, one beyond its 64-bit sizes with OverflowError, on the first chunk.
    try:
        yield from chunks
    except (MemoryError, OverflowError) as exc:
        raise TooMany(
            f"{payments} payments are more than this machine can generate at once ({exc}): "
            "generate fewer; files of other seeds share no id, so a folder of them is one "
            "longer history"
        ) from None


def _activity(payments: int, seed: int, chunk: int) -> Iterator[list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    accounts = max(1, payments // PAYMENTS_PER_ACCOUNT)
    home = _choice(rng, _COUNTRY_WEIGHTS, accounts)
    age_at_start = np.minimum(rng.gamma(1.2, 500, size=accounts).astype(np.int64), 20_000)
    spend = rng.lognormal(0.0, 0.5, size=accounts)  # how much an account spends, relatively
    activity = rng.gamma(2.0, 1.0, size=accounts)
    busy = activity / activity.sum()
    # rng.choice(accounts, p=busy) for one account, as numpy computes it (the cumulative
    # distribution, normalised, searched with one uniform draw), without rebuilding the
    # distribution over every account for each fraud episode: the same draws, the same file.
    busy_cdf = busy.cumsum()
    busy_cdf /= busy_cdf[-1]

    # Legitimate sessions: an optional login (now and then after a typo), then 1-3 payments.
    fraud_budget = round(payments * FRAUD_SHARE)
    legit = max(payments - fraud_budget, 1)
    sizes = rng.integers(1, 4, size=legit)  # more than enough sessions; cut at `legit` payments
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), legit)) + 1]
    sizes[-1] -= int(sizes.sum()) - legit
    sessions = len(sizes)
    who = rng.choice(accounts, size=sessions, p=busy)
    starts = _session_times(rng, sessions)
    logs_in = rng.random(sessions) < 0.8
    typos = np.where(logs_in, rng.poisson(0.12, size=sessions), 0)
    # Each session that logs in: its typos (failures 60, 40, 20 s before it starts), then the
    # successful login 10 s before; in session order.
    logging = np.flatnonzero(logs_in)
    tries = typos[logging] + 1
    login_session = np.repeat(logging, tries)
    attempt = np.arange(int(tries.sum())) - np.repeat(np.cumsum(tries) - tries, tries)
    login_ok = [attempt == typos[login_session]]
    login_time = [
        np.where(
            login_ok[0],
            starts[login_session] - 10 * SECOND,
            starts[login_session] - (3 - attempt) * 20 * SECOND,
        )
    ]
    login_account = [who[login_session]]
    del login_session, attempt, logging, tries
    session = np.repeat(np.arange(sessions), sizes)
    position = np.arange(legit) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pay_time = [starts[session] + position * rng.integers(30, 900, size=legit) * SECOND]
    pay_account = [who[session]]
    del session, position
    pay_fraud = [np.zeros(legit, bool)]
    pay_category = [_choice(rng, _CATEGORY_WEIGHTS, legit)]
    pay_abroad = [rng.random(legit) < 0.06]
    pay_device = [rng.random(legit) < 0.06]

    # Fraud episodes until the budget is spent.
    while fraud_budget > 0:
        account = int(busy_cdf.searchsorted(rng.random(), side="right"))
        time = int(_session_times(rng, 1)[0])
        takeover = rng.random() < 0.7
        run = min(fraud_budget, int(rng.integers(1, 6 if takeover else 4)))
        if takeover:
            guesses = int(rng.integers(2, 12))
            gaps = rng.integers(5, 60, size=guesses)
            waited = np.cumsum(gaps[::-1])[::-1]  # gaps[k:].sum() for each guess k
            login_time.append(np.append(time - MINUTE - waited * SECOND, time - 20 * SECOND))
            login_account.append(np.full(guesses + 1, account))
            login_ok.append(np.arange(guesses + 1) == guesses)
        pay_time.append(time + np.arange(run) * rng.integers(20, 300, size=run) * SECOND)
        pay_account.append(np.full(run, account))
        pay_fraud.append(np.ones(run, bool))
        pay_category.append(_choice(rng, _FRAUD_CATEGORY_WEIGHTS, run))
        pay_abroad.append(rng.random(run) < (0.5 if takeover else 0.8))
        pay_device.append(rng.random(run) < (0.6 if takeover else 0.3))
        fraud_budget -= run

    yield from _events(
        rng,
        f"{seed}-{payments}",
        chunk,
        _Logins(
            np.concatenate(login_time).astype(np.int64),
            np.concatenate(login_account).astype(np.int64),
            np.concatenate(login_ok),
        ),
        np.concatenate(pay_time),
        np.concatenate(pay_account),
        np.concatenate(pay_fraud),
        np.concatenate(pay_category),
        np.concatenate(pay_abroad),
        np.concatenate(pay_device),
        home=home,
        age_at_start=age_at_start,
        spend=spend,
    )


@dataclass(frozen=True)
class _Logins:
    """Every login, in the order they were drawn (which orders logins at the same time)."""

    time: np.ndarray
    account: np.ndarray
    ok: np.ndarray


def _events(
    rng: np.random.Generator,
    world: str,
    chunk: int,
    logins: _Logins,
    time: np.ndarray,
    account: np.ndarray,
    fraud: np.ndarray,
    category: np.ndarray,
    abroad: np.ndarray,
    device: np.ndarray,
    *,
    home: np.ndarray,
    age_at_start: np.ndarray,
    spend: np.ndarray,
) -> Iterator[list[dict[str, Any]]]:
    """The payments' fields, drawn for all at once, and every event as a record, in time order
    (payments before logins at the same microsecond), `chunk` records at a time."""
    n = len(time)
    order = np.argsort(time, kind="stable")
    time, account, fraud, category = time[order], account[order], fraud[order], category[order]
    abroad, device = abroad[order], device[order]
    del order
    card_country = home[account]
    country = np.where(abroad, _choice(rng, _COUNTRY_WEIGHTS, n), card_country)
    local_currency = np.array([_CURRENCY_CODE[_COUNTRY_CURRENCY[c]] for c in _COUNTRIES])[country]
    currency = np.where(rng.random(n) < 0.9, local_currency, account % 4)
    del local_currency
    usd = _CATEGORY_MEDIAN_USD[category] * spend[account] * rng.lognormal(0.0, 0.8, size=n)
    usd = np.where(fraud, usd * rng.lognormal(0.6, 0.5, size=n), usd)  # fraud drains more
    amount = np.round(usd / _RATES[currency], 2)
    del usd
    age = np.minimum(age_at_start[account] + (time - START) // (86400 * SECOND), 36_500)
    hour = (time // (3600 * SECOND)) % 24

    # Payments sort before logins at the same time; logins at one time keep the order drawn.
    when = np.concatenate([logins.time, time])
    kind = np.concatenate([np.ones(len(logins.time), np.int8), np.zeros(n, np.int8)])
    merged = np.lexsort((kind, when))
    del kind
    first_payment = len(logins.time)
    for begin in range(0, len(merged), chunk):
        picked = merged[begin : begin + chunk]
        stamps = _iso(when[picked]).tolist()
        records: list[dict[str, Any]] = []
        for index, stamp in zip(picked.tolist(), stamps, strict=True):
            if index < first_payment:
                who, ok = int(logins.account[index]), bool(logins.ok[index])
                envelope = _envelope("login", world, index + 1, who, stamp)
                records.append({**envelope, "outcome": "success" if ok else "failure"})
                continue
            i = index - first_payment
            envelope = _envelope("payment", world, i + 1, int(account[i]), stamp)
            fields = {
                "amount": float(amount[i]),
                "currency": CURRENCIES[int(currency[i])],
                "merchant_category": MERCHANT_CATEGORIES[int(category[i])],
                "country": _COUNTRIES[int(country[i])],
                "card_country": _COUNTRIES[int(card_country[i])],
                "hour_of_day": int(hour[i]),
                "account_age_days": int(age[i]),
                "is_new_device": bool(device[i]),
                LABEL: bool(fraud[i]),
            }
            records.append({**envelope, **fields})
        yield records


def _envelope(kind: str, world: str, number: int, account: int, stamp: str) -> dict[str, Any]:
    """The event's envelope; `world` is the seed and size (`7-60000`), which the ids carry."""
    return {
        "type": kind,
        "event_id": f"{kind[0]}-{world}-{number:08d}",
        "account_id": f"acct-{world}-{account:06d}",
        "occurred_at": stamp,
    }


def _iso(micros: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC with microseconds and 'Z', for many times at once."""
    text = np.datetime_as_string(np.asarray(micros, dtype="datetime64[us]"), unit="us")
    return np.char.add(text, "Z")
