import pytest

from components.core.contract import make_labels
from components.text.enrich import enrich, find_contact_details


@pytest.mark.parametrize("text, kinds", [
    ("call me on 415-283-1942 tonight", ["phone"]),
    ("(212) 748-0199 after 6", ["phone"]),
    ("uk number +44 7911 123456", ["phone"]),
    ("write to jo.smith84@gmail.com", ["email"]),
    ("deals at www.quickcash.xyz/claim", ["url"]),
    ("https://secure-pay.co/login now", ["url"]),
    ("bit.ly/win123", ["url"]),
    ("add me @jenny_22", ["handle"]),
])
def test_contact_details_are_found(text, kinds):
    assert [k for k, _ in find_contact_details(text)] == kinds


@pytest.mark.parametrize("text", [
    "@user you are so wrong about this",      # the public sets' mention placeholder
    "order #12345678 shipped on monday",
    "version 2.0.1 is out, see the changelog",
    "meet at 7:30 by the station",
    "I paid $150 for it",
    "Node.js and Vue are fine",
    "email support through the app",
])
def test_look_alikes_are_not_contact_details(text):
    assert find_contact_details(text) == []


def test_rules_only_add_labels_and_say_which_fired():
    labels, fired = enrich("[GENERAL][MESSAGE] wire it, then text 415-283-1942 you fucking idiot", make_labels(["scam_patterns"]))
    assert fired == ["contact_details", "strong_profanity"]
    assert {k for k, v in labels.items() if v} == {"scam_patterns", "contact_info", "profanity"}
    labels, fired = enrich("Scunthorpe assessment, damn good", make_labels(["profanity"]))
    assert fired == [] and labels["profanity"] == 1
