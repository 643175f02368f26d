"""ISO 4217 currency codes and the number of digits of their minor unit."""

from __future__ import annotations

_ZERO_DECIMAL = frozenset(
    """
        BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI
        VND VUV XAF XOF XPF
    """.split()  # noqa: SIM905
)
_THREE_DECIMAL = frozenset(
    """
        BHD IQD JOD KWD LYD OMR TND
    """.split()  # noqa: SIM905
)
_FOUR_DECIMAL = frozenset(
    """
        CLF UYW
    """.split()  # noqa: SIM905
)
_TWO_DECIMAL = frozenset(
    """
        AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD
        BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
        CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE
        CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
        GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR
        IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD
        LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
        MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN
        PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG
        SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL
        THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU
        UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL
    """.split()  # noqa: SIM905
)

MINOR_UNIT_DIGITS: dict[str, int] = {
    **{code: 0 for code in _ZERO_DECIMAL},
    **{code: 2 for code in _TWO_DECIMAL},
    **{code: 3 for code in _THREE_DECIMAL},
    **{code: 4 for code in _FOUR_DECIMAL},
}


def minor_unit_digits(currency: str) -> int:
    """Digits after the decimal point of a currency's minor unit.

    >>> minor_unit_digits("JPY"), minor_unit_digits("USD"), minor_unit_digits("KWD")
    (0, 2, 3)
    """
    return MINOR_UNIT_DIGITS[currency]


def is_currency(code: str) -> bool:
    return code in MINOR_UNIT_DIGITS
