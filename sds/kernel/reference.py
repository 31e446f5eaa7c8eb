"""Reference data the features and the aggregates share: merchant categories and currencies.

Fixed on purpose: a feature must not depend on a live feed (same event, same vector), and a tree
model only needs amounts on a comparable scale.
"""

from __future__ import annotations

from collections.abc import Mapping

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "online_retail",
    "digital_goods",
    "gambling",
    "pharmacy",
    "other",
)

# Fixed reference rates to USD.
USD_PER_UNIT: Mapping[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.12,
    "CAD": 0.73,
    "AUD": 0.66,
    "JPY": 0.0067,
    "SEK": 0.095,
    "MXN": 0.058,
    "BRL": 0.20,
    "INR": 0.012,
    "SGD": 0.74,
}
CURRENCIES: tuple[str, ...] = tuple(USD_PER_UNIT)
