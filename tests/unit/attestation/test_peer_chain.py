"""The application's first check of a client chain: each kind of bad chain gets its own
refusal, and a good one its path, without any TLS."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from imprint.attestation.base import ChainIncomplete, EkuMissing, IssuerUnknown, SelfSigned
from imprint.attestation.peer_chain import (
    IntermediateMemory,
    PresentedChain,
    build_path,
    check_presented,
    refuse_without_client_auth,
)
from tests.integration.test_client_certificate_refusals import make_certificate

ROOT = make_certificate("Root", None, ca=True)
LINE = make_certificate("Line", ROOT, ca=True)
OTHER_ROOT = make_certificate("Root", None, ca=True)  # same name, another key


def test_a_leaf_sent_with_its_intermediate_leads_to_the_trusted_root() -> None:
    leaf = make_certificate("dev", LINE)
    chain = PresentedChain(leaf.certificate, (LINE.certificate,))
    path = check_presented(chain, [ROOT.certificate])
    assert path == (leaf.certificate, LINE.certificate, ROOT.certificate)


def test_a_trusted_intermediate_ends_the_path_by_itself() -> None:
    leaf = make_certificate("dev", LINE)
    assert build_path(leaf.certificate, (), [LINE.certificate]) == (
        leaf.certificate,
        LINE.certificate,
    )


def test_self_signed() -> None:
    alone = make_certificate("dev", None)
    with pytest.raises(SelfSigned):
        check_presented(PresentedChain(alone.certificate), [ROOT.certificate])


def test_server_only_usage_is_eku_missing() -> None:
    leaf = make_certificate("dev", LINE, usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(EkuMissing):
        check_presented(PresentedChain(leaf.certificate, (LINE.certificate,)), [ROOT.certificate])


def test_no_usage_at_all_is_allowed_unless_required() -> None:
    without_eku = LINE.certificate  # made without an extended key usage
    refuse_without_client_auth(without_eku)
    with pytest.raises(EkuMissing):
        refuse_without_client_auth(without_eku, required=True)
    with pytest.raises(EkuMissing):
        refuse_without_client_auth(
            make_certificate("code", LINE, usage=[ExtendedKeyUsageOID.CODE_SIGNING]).certificate
        )


def test_an_unknown_root_and_an_unknown_issuer_are_issuer_unknown() -> None:
    leaf = make_certificate("dev", LINE)
    with pytest.raises(IssuerUnknown, match="a root CA imprint does not trust"):
        check_presented(
            PresentedChain(leaf.certificate, (LINE.certificate, ROOT.certificate)),
            [make_certificate("Elsewhere", None, ca=True).certificate],
        )
    with pytest.raises(IssuerUnknown, match="its issuer is CN=Line"):
        check_presented(PresentedChain(leaf.certificate), [])


def test_a_trusted_name_on_a_certificate_it_did_not_sign_is_issuer_unknown() -> None:
    forged = make_certificate("Line", OTHER_ROOT, ca=True)
    leaf = make_certificate("dev", forged)
    with pytest.raises(IssuerUnknown, match="did not sign"):
        check_presented(PresentedChain(leaf.certificate, (forged.certificate,)), [ROOT.certificate])


def test_a_gap_in_what_was_sent_is_chain_incomplete() -> None:
    leaf = make_certificate("dev", LINE)
    with pytest.raises(ChainIncomplete, match="CN=Line"):
        check_presented(PresentedChain(leaf.certificate, (ROOT.certificate,)), [ROOT.certificate])


def test_an_intermediate_seen_before_makes_a_missing_one_chain_incomplete() -> None:
    seen = IntermediateMemory()
    sibling = make_certificate("sibling", LINE)
    check_presented(
        PresentedChain(sibling.certificate, (LINE.certificate,)), [ROOT.certificate], seen=seen
    )
    orphan = make_certificate("dev", LINE)
    with pytest.raises(ChainIncomplete):
        check_presented(PresentedChain(orphan.certificate), [ROOT.certificate], seen=seen)
    # Without that memory, the same chain cannot be told from an unknown issuer.
    with pytest.raises(IssuerUnknown):
        check_presented(PresentedChain(orphan.certificate), [ROOT.certificate])


def test_memory_is_bounded() -> None:
    seen = IntermediateMemory(capacity=2)
    for name in ("a", "b", "c"):
        ca = make_certificate(name, ROOT, ca=True)
        seen.remember([make_certificate("leaf", ca).certificate, ca.certificate, ROOT.certificate])
    names = [make_certificate(n, ROOT, ca=True).certificate.subject for n in ("a", "b", "c")]
    assert [name in seen for name in names] == [False, True, True]
