"""Unit tests of credential stores, derived keys, sessions, throttle, redaction, certificates."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from tandem.api.sessions import LoginThrottle, SessionStore
from tandem.security.certs import fingerprint, init_pair, normalize_fingerprint
from tandem.security.keys import broker_hmac_key, derive_key, peer_bearer
from tandem.security.redact import REDACTED, redact
from tandem.security.roles import Access, Principal, PrincipalKind, Role
from tandem.security.tokens import TokenError, TokenStore
from tandem.security.users import UserError, UserStore

PASSWORD = "correct horse battery"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- keys ---------------------------------------------------------------------------------------


def test_derive_key_peer_and_broker_labels_give_different_keys() -> None:
    secret = "a-cluster-secret"
    assert broker_hmac_key(secret) != derive_key(secret, "tandem peer-link v1")
    assert len(broker_hmac_key(secret)) == 32
    assert peer_bearer(secret) == peer_bearer(secret)
    assert secret not in peer_bearer(secret)


def test_derive_key_other_secret_gives_other_bearer() -> None:
    assert peer_bearer("secret-one-xx") != peer_bearer("secret-two-xx")


def test_derive_key_empty_secret_raises() -> None:
    with pytest.raises(ValueError):
        derive_key("", "label")


# ---- roles --------------------------------------------------------------------------------------


def test_principal_roles_include_lower_ones_and_never_peer() -> None:
    operator = Principal(PrincipalKind.TOKEN, "t", Role.OPERATOR)
    assert operator.allows(Access.VIEWER) and operator.allows(Access.OPERATOR)
    assert not operator.allows(Access.ADMIN)
    assert not Principal(PrincipalKind.SESSION, "a", Role.ADMIN).allows(Access.PEER)
    peer = Principal(PrincipalKind.PEER, "peer", None)
    assert peer.allows(Access.PEER) and not peer.allows(Access.VIEWER)


# ---- users --------------------------------------------------------------------------------------


def test_user_store_add_hashes_with_argon2id_in_private_file(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    store.add("alice", Role.OPERATOR, PASSWORD)
    text = store.path.read_text()
    assert PASSWORD not in text
    assert json.loads(text)["users"]["alice"]["hash"].startswith("$argon2id$")
    assert mode_of(store.path) == 0o600
    assert [(u.name, u.role) for u in store.list()] == [("alice", Role.OPERATOR)]


def test_user_store_verify_right_wrong_and_unknown(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    store.add("alice", Role.VIEWER, PASSWORD)
    user = store.verify("alice", PASSWORD)
    assert user is not None and user.role is Role.VIEWER
    assert store.verify("alice", "wrong password") is None
    assert store.verify("nobody", PASSWORD) is None


def test_user_store_duplicate_weak_and_unknown_are_errors(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    store.add("alice", Role.VIEWER, PASSWORD)
    with pytest.raises(UserError, match="exists"):
        store.add("alice", Role.ADMIN, PASSWORD)
    with pytest.raises(UserError, match="at least"):
        store.add("bob", Role.VIEWER, "short")
    with pytest.raises(UserError, match="bad user name"):
        store.add("bad name", Role.VIEWER, PASSWORD)
    with pytest.raises(UserError, match="no user"):
        store.remove("nobody")


def test_user_store_passwd_and_remove_seen_by_another_instance(tmp_path: Path) -> None:
    running = UserStore(tmp_path)  # the node's copy, reading the file as it changes
    cli = UserStore(tmp_path)
    cli.add("alice", Role.ADMIN, PASSWORD)
    assert running.get("alice") is not None
    cli.set_password("alice", "another password")
    assert running.verify("alice", PASSWORD) is None
    assert running.verify("alice", "another password") is not None
    cli.remove("alice")
    assert running.get("alice") is None


def test_user_store_damaged_file_means_no_users(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    store.add("alice", Role.ADMIN, PASSWORD)
    store.path.write_text("{not json")
    assert store.get("alice") is None
    assert store.verify("alice", PASSWORD) is None


# ---- tokens -------------------------------------------------------------------------------------


def test_token_store_keeps_only_a_hash_and_checks_the_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    info, token = store.create(Role.VIEWER, "grafana")
    assert token.startswith("tdm_") and token not in store.path.read_text()
    assert mode_of(store.path) == 0o600
    checked = TokenStore(tmp_path).check(token)
    assert checked is not None and (checked.name, checked.role) == ("grafana", Role.VIEWER)
    assert store.check(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.check("tdm_" + info.id + "_x") is None
    assert store.check("") is None


def test_token_store_revoke_by_name_or_id_takes_effect_at_once(tmp_path: Path) -> None:
    running = TokenStore(tmp_path)
    a_info, a = TokenStore(tmp_path).create(Role.OPERATOR, "a")
    _, b = TokenStore(tmp_path).create(Role.ADMIN, "b")
    assert running.check(a) is not None and running.check(b) is not None
    TokenStore(tmp_path).revoke("b")
    TokenStore(tmp_path).revoke(a_info.id)
    assert running.check(a) is None and running.check(b) is None
    with pytest.raises(TokenError):
        running.revoke("b")


def test_token_store_expired_token_refused(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    info, token = store.create(Role.VIEWER, expires_days=1)
    assert info.expires is not None
    assert store.check(token, now=info.expires - 1) is not None
    assert store.check(token, now=info.expires + 1) is None


def test_token_store_duplicate_name_refused(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.create(Role.VIEWER, "same")
    with pytest.raises(TokenError, match="exists"):
        store.create(Role.VIEWER, "same")


# ---- sessions and throttle ----------------------------------------------------------------------


def test_session_store_idle_timeout_and_absolute_lifetime() -> None:
    sessions = SessionStore(idle_s=10, lifetime_s=25)
    from tandem.api.sessions import session_key

    cookie, _ = sessions.create("alice", Role.VIEWER, now=0)
    key = session_key(cookie)
    assert sessions.lookup(key, 9) is not None  # touched at 9
    assert sessions.lookup(key, 18) is not None  # idle 9 s: fine, touched at 18
    assert sessions.lookup(key, 26) is None  # past the lifetime, however active
    cookie2, _ = sessions.create("bob", Role.VIEWER, now=100)
    assert sessions.lookup(session_key(cookie2), 111) is None  # idle 11 s > 10


def test_login_throttle_backs_off_exponentially_and_resets_on_success() -> None:
    throttle = LoginThrottle(free=3, base_s=1.0, max_s=8.0)
    for t in range(3):
        assert throttle.wait_s("user:a", t) == 0
        throttle.failed("user:a", t)
    assert throttle.wait_s("user:a", 2.0) == pytest.approx(1.0)
    throttle.failed("user:a", 3.0)
    assert throttle.wait_s("user:a", 3.0) == pytest.approx(2.0)
    for t in range(4, 10):
        throttle.failed("user:a", float(t))
    assert throttle.wait_s("user:a", 9.0) == pytest.approx(8.0)  # capped
    assert throttle.wait_s("user:b", 9.0) == 0
    throttle.succeeded("user:a")
    assert throttle.wait_s("user:a", 9.0) == 0


def test_login_throttle_keys_bounded() -> None:
    throttle = LoginThrottle(max_keys=10)
    for i in range(100):
        throttle.failed(f"user:{i}", 0.0)
    assert len(throttle._keys) == 10


# ---- redaction ----------------------------------------------------------------------------------


def test_redact_every_secret_named_field_at_any_depth() -> None:
    doc = {
        "mqtt": {"host": "h", "password": "p4ss", "tls": {"key_file": "/k"}, "username": "u"},
        "ha": {"secret": "s3cret", "peer_url": "http://x"},
        "list": [{"api_token": "t0k"}, {"value": 1}],
        "none": {"password": None},
    }
    out = redact(doc)
    text = json.dumps(out)
    for secret in ("p4ss", "s3cret", "t0k", "/k"):
        assert secret not in text
    assert out["mqtt"]["password"] == REDACTED and out["mqtt"]["username"] == "u"
    assert out["none"]["password"] is None
    assert out["list"][1] == {"value": 1}


# ---- certificates -------------------------------------------------------------------------------


def test_certs_init_pair_makes_ca_and_node_certs_with_sans(tmp_path: Path) -> None:
    made = init_pair(tmp_path, [("node-a", "10.0.0.1"), ("node-b", "nb.example")], "line1")
    assert mode_of(tmp_path / "ca.key") == 0o600
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    for files in made:
        assert mode_of(files.key_file) == 0o600
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert files.name in san.get_values_for_type(x509.DNSName)
        assert fingerprint(cert) == files.fingerprint
    san_a = x509.load_pem_x509_certificate(made[0].cert_file.read_bytes()).extensions
    ips = san_a.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.1") in ips.get_values_for_type(x509.IPAddress)
    with pytest.raises(Exception, match="already holds a CA"):
        init_pair(tmp_path, [("node-c", "10.0.0.3")], "line1")


def test_normalize_fingerprint_accepts_openssl_and_prefixed_forms() -> None:
    hexes = "ab" * 32
    colons = ":".join(["AB"] * 32)
    assert normalize_fingerprint(f"sha256:{hexes}") == f"sha256:{hexes}"
    assert normalize_fingerprint(f"SHA256 Fingerprint={colons}") == f"sha256:{hexes}"
    with pytest.raises(ValueError):
        normalize_fingerprint("sha256:1234")


# ---- files --------------------------------------------------------------------------------------


def test_credential_files_private_even_with_an_open_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        UserStore(tmp_path).add("alice", Role.VIEWER, PASSWORD)
        TokenStore(tmp_path).create(Role.VIEWER)
        init_pair(tmp_path / "tls", [("node-a", "10.0.0.1")], "line1")
    finally:
        os.umask(old_umask)
    for path in ("users.json", "tokens.json", "tls/ca.key", "tls/node-a.key"):
        assert mode_of(tmp_path / path) == 0o600, path
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
