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

#: The ISO 4217 codes of money a household pays its electricity in: every circulating
#: currency, and those withdrawn since 2007 that a site's older records are priced in (the
#: kuna until 2023, the litas until 2015, …). Metals, funds and test codes (XAU, XDR, XTS)
#: are no household's; a code outside the list is a typo (``UDS``) or no ISO currency
#: (``BTC``), and a bill written in it would read as money the owner does not pay in.
ISO_4217: frozenset[str] = frozenset("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    BYR CUC CYP EEK HRK LTL LVL MRO MTL SKK SLL STD TMM VEF ZMK ZWL
""".split())


def currency_of(country: str, currency: str | None = None) -> str:
    """The site's currency code: the one configured, else its country's."""
    return currency or CURRENCY_BY_COUNTRY.get(country, FALLBACK_CURRENCY)


def check_currency(value: str | None) -> str | None:
    """An ISO 4217 code of :data:`ISO_4217`, or None for the country's."""
    if value is None or value in ISO_4217:
        return value
    if isinstance(value, str) and value.upper() in ISO_4217:
        raise ValueError(f"{shown(value)} is not a currency code; expected it in capitals, {value.upper()!r} "
                         "(ISO 4217)")
    raise ValueError(f"{shown(value)} is not a currency code; expected an ISO 4217 code such as 'USD', 'EUR' or "
                     "'GBP', or null for the country's")


def symbol(currency: str) -> str:
    return SYMBOLS.get(currency, f"{currency} ")


def money(amount: float, currency: str) -> str:
    """``$1.23``, ``−€0.40``: two decimals, the sign before the symbol."""
    rounded = round(float(amount), 2) + 0.0  # no "−0.00"
    return f"{'−' if rounded < 0 else ''}{symbol(currency)}{abs(rounded):.2f}"


def price(amount: float, currency: str) -> str:
    """A price per kWh: ``$0.08/kWh``."""
    return f"{money(amount, currency)}/kWh"
