"""PII detectors: the formats the privacy rules rely on, with their checksums, and no false alarms on
everyday numbers (dates, versions, IPs, order numbers)."""

from __future__ import annotations

import pytest

from gateway.routing.pii import GROUPS, expand_kinds, iban_ok, luhn_ok, scan

ALL = GROUPS["any"]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe+news@example.co.uk today", "email"),
        ("call me on +33 6 12 34 56 78", "phone"),
        ("office: (415) 555-0132", "phone"),
        ("mobile 415-555-0132", "phone"),
        ("tel 06 12 34 56 78", "phone"),
        ("tel 0612345678", "phone"),
        ("London 020 7946 0958", "phone"),
        ("+4915123456789", "phone"),
        ("card 4111 1111 1111 1111 exp 12/27", "credit_card"),
        ("card 5500-0000-0000-0004", "credit_card"),
        ("amex 378282246310005", "credit_card"),
        ("IBAN DE89 3704 0044 0532 0130 00 THANK YOU", "iban"),
        ("pay to GB82WEST12345698765432", "iban"),
        ("FR14 2004 1010 0505 0001 3M02 606", "iban"),
        ("ssn 123-45-6789", "us_ssn"),
        ("NI number AB 12 34 56 C", "uk_nino"),
        ("NINO: AB123456C", "uk_nino"),
        ("NIR 1 85 05 78 006 084 91", "fr_insee"),
        ("NIR 185057800608491", "fr_insee"),
        ("Corsica 2 69 05 2A 123 456 88", "fr_insee"),
    ],
)
def test_detects(text: str, kind: str) -> None:
    assert kind in scan(text, ALL)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("card 4111 1111 1111 1112", "credit_card"),  # Luhn fails
        ("IBAN GB82WEST12345698765433", "iban"),  # mod-97 fails
        ("ssn 000-45-6789", "us_ssn"),  # area 000 is never issued
        ("ssn 666-45-6789", "us_ssn"),
        ("ssn 123-00-6789", "us_ssn"),
        ("NINO QQ123456C", "uk_nino"),  # Q is not a valid prefix letter
        ("NINO GB123456A", "uk_nino"),  # GB is excluded
        ("NIR 1 85 05 78 006 084 36", "fr_insee"),  # wrong key
        ("user@localhost", "email"),
    ],
)
def test_checksums_and_exclusions(text: str, kind: str) -> None:
    assert kind not in scan(text, ALL)


@pytest.mark.parametrize(
    "text",
    [
        "Released version 1.2.3 on 2024-01-15 at 10:30:00.",
        "Server 192.168.100.200 port 8080, pid 12345.",
        "Order 12345678901 shipped; tracking 1Z999AA10123456784.",
        "pi = 3.14159265358979, e = 2.718281828",
        "x = 1234567890123 and y = 9999999999999999",
        "Compute 17 * 23 + 456 - 789.",
        "ISBN 978-3-16-148410-0",
    ],
)
def test_no_false_alarms_on_everyday_numbers(text: str) -> None:
    assert scan(text, ALL) == frozenset()


def test_checksum_helpers() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_groups_expand_and_unknown_kinds_fail() -> None:
    assert expand_kinds(["national_id", "us_ssn", "email"]) == ("us_ssn", "uk_nino", "fr_insee", "email")
    with pytest.raises(ValueError, match="unknown pii kind 'passport'"):
        expand_kinds(["passport"])


def test_scan_only_checks_the_kinds_asked_for() -> None:
    text = "mail a@example.com, ssn 123-45-6789"
    assert scan(text, ["email"]) == {"email"}
    assert scan(text, ["iban"]) == frozenset()
