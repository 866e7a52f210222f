"""Money as a home owner reads it: a site's currency, its symbol, and one way to write amounts.

A site's currency is its config's ``currency`` or, when that is left out, the currency of its
``country``. Amounts are written with two decimals, prices per kWh too, and the minus sign
before the symbol (``−$0.53``), so a figure reads the same on the command line, in the API's
text fields and on the dashboard.
"""

from __future__ import annotations

from der_core.der_data import shown

#: ISO 4217 code per ISO 3166 country, for the countries a site is likely to be in.
CURRENCY_BY_COUNTRY: dict[str, str] = {
    "US": "USD", "CA": "CAD", "MX": "MXN", "BR": "BRL", "AU": "AUD", "NZ": "NZD", "JP": "JPY", "CN": "CNY",
    "IN": "INR", "KR": "KRW", "ZA": "ZAR", "GB": "GBP", "CH": "CHF", "NO": "NOK", "SE": "SEK", "DK": "DKK",
    "PL": "PLN", "CZ": "CZK", "HU": "HUF", "RO": "RON", "BG": "BGN", "IS": "ISK",
    **dict.fromkeys(("DE", "FR", "ES", "IT", "NL", "BE", "AT", "IE", "PT", "FI", "GR", "LU", "SK", "SI", "EE",
                     "LV", "LT", "MT", "CY", "HR"), "EUR"),
}
#: How each currency is written before an amount; others are written as their code and a space.
SYMBOLS: dict[str, str] = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "INR": "₹", "KRW": "₩",
                           "AUD": "A$", "CAD": "C$", "NZD": "NZ$", "BRL": "R$", "MXN": "MX$"}
FALLBACK_CURRENCY = "USD"  # a country missing from the table above: the config's default country's


def currency_of(country: str, currency: str | None = None) -> str:
    """The site's currency code: the one configured, else its country's."""
    return currency or CURRENCY_BY_COUNTRY.get(country, FALLBACK_CURRENCY)


def check_currency(value: str | None) -> str | None:
    """An ISO 4217 code, or None for the country's."""
    if value is not None and not (len(value) == 3 and value.isascii() and value.isalpha() and value.isupper()):
        raise ValueError(f"{shown(value)} is not a currency code; expected three capital letters (ISO 4217) "
                         "such as 'USD', 'EUR' or 'GBP', or null for the country's")
    return value


def symbol(currency: str) -> str:
    return SYMBOLS.get(currency, f"{currency} ")


def money(amount: float, currency: str) -> str:
    """``$1.23``, ``−€0.40``: two decimals, the sign before the symbol."""
    rounded = round(float(amount), 2) + 0.0  # no "−0.00"
    return f"{'−' if rounded < 0 else ''}{symbol(currency)}{abs(rounded):.2f}"


def price(amount: float, currency: str) -> str:
    """A price per kWh: ``$0.08/kWh``."""
    return f"{money(amount, currency)}/kWh"
