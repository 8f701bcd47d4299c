"""Unit tests of credentials/sealing.py: AES-256-GCM sealing of venue keys (pure, no I/O)."""

from __future__ import annotations

import base64
import os

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import ConfigError, load_settings
from credentials.sealing import (
    ENVIRONMENTS,
    CredentialRecord,
    EncryptionKey,
    InvalidCredential,
    KdfParams,
    NoEncryptionKey,
    TamperedRecord,
    VenueKeys,
    WrongKey,
    decode_record,
    derive_key,
    encode_record,
    is_passphrase,
    key_id_of,
    new_kdf_params,
    open_record,
    raw_key_of,
    seal,
)

RAW = bytes(range(32))
KEY = EncryptionKey(RAW, "raw")
KEYS = VenueKeys("AKIAEXAMPLEKEY123456", "s3cr3t-SECRET-value-000", "pass-phrase")
PASSPHRASE = "correct horse battery staple"


def sealed(keys: VenueKeys = KEYS, venue: str = "binance", environment: str = "testnet") -> CredentialRecord:
    return seal(KEY, venue, environment, keys, stored_at=1_000)


def flip(b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# ------------------------------------------------------------------------------------------------------
def test_round_trip():
    record = sealed()
    assert open_record(KEY, record, "binance", "testnet") == KEYS
    assert record.version == 2 and record.algorithm == "AES-256-GCM"
    assert record.venue == "binance" and record.environment == "testnet"
    assert record.stored_at == 1_000 and record.rotated_at is None and record.source == "api"
    assert record.key_last4 == "3456"
    assert record.key_id == KEY.key_id == key_id_of(RAW)


def test_round_trip_through_the_stored_bytes():
    record = decode_record(encode_record(sealed()), "binance", "testnet")
    assert open_record(KEY, record, "binance", "testnet") == KEYS


def test_each_write_has_a_fresh_nonce():
    a, b = sealed(), sealed()
    assert a.nonce != b.nonce and a.ciphertext != b.ciphertext
    assert len(base64.b64decode(a.nonce)) == 12


def test_record_holds_no_secret_in_any_form():
    data = encode_record(sealed())
    for secret in (KEYS.api_key, KEYS.api_secret, KEYS.password):
        for form in (secret.encode(), base64.b64encode(secret.encode()), secret.encode().hex().encode()):
            assert form not in data


@pytest.mark.parametrize("index", [0, 5, 17, -17, -1])  # ciphertext bytes and the tag (the last 16)
def test_a_flipped_ciphertext_byte_is_refused_as_tampered(index):
    record = sealed()
    bad = msgspec.structs.replace(record, ciphertext=flip(record.ciphertext, index))
    with pytest.raises(TamperedRecord, match="binance/testnet was changed after it was stored"):
        open_record(KEY, bad, "binance", "testnet")


def test_a_flipped_nonce_byte_is_refused_as_tampered():
    record = sealed()
    bad = msgspec.structs.replace(record, nonce=flip(record.nonce, 3))
    with pytest.raises(TamperedRecord):
        open_record(KEY, bad, "binance", "testnet")


def test_a_truncated_ciphertext_is_refused_as_tampered():
    record = sealed()
    short = base64.b64encode(base64.b64decode(record.ciphertext)[:-1]).decode()
    with pytest.raises(TamperedRecord):
        open_record(KEY, msgspec.structs.replace(record, ciphertext=short), "binance", "testnet")


def test_a_damaged_record_is_refused_as_tampered():
    with pytest.raises(TamperedRecord, match="not a credential record"):
        decode_record(b'{"version": 1}', "binance", "live")
    record = sealed()
    with pytest.raises(TamperedRecord, match="not base64"):
        open_record(KEY, msgspec.structs.replace(record, nonce="!!"), "binance", "testnet")
    with pytest.raises(TamperedRecord, match="version"):
        open_record(KEY, msgspec.structs.replace(record, version=1), "binance", "testnet")


def test_wrong_key_is_refused_and_reported_as_a_wrong_key():
    record = sealed()
    other = EncryptionKey(os.urandom(32), "raw")
    with pytest.raises(WrongKey, match="sealed with another key") as info:
        open_record(other, record, "binance", "testnet")
    assert "CREDENTIAL_ENCRYPTION_KEY" in str(info.value)
    assert not isinstance(info.value, TamperedRecord)


@pytest.mark.parametrize(
    ("venue", "environment"), [("binance", "live"), ("kraken", "testnet"), ("kraken", "live")], ids=str
)
def test_a_record_moved_to_another_venue_or_environment_is_refused(venue, environment):
    """The associated data is the place the record is read from: a testnet record copied to live (or to
    another venue) does not open, even with its own venue and environment fields rewritten to match."""
    record = sealed()
    with pytest.raises(TamperedRecord):
        open_record(KEY, record, venue, environment)
    relabelled = msgspec.structs.replace(record, venue=venue, environment=environment)
    with pytest.raises(TamperedRecord):
        open_record(KEY, relabelled, venue, environment)


@pytest.mark.parametrize(
    "change",
    [
        {"key_last4": "9999"},
        {"key_last4": ""},
        {"stored_at": 999},
        {"rotated_at": 2_000},
        {"source": "env"},
    ],
)
def test_edited_metadata_is_refused_as_tampered(change):
    """keyLast4, storedAt, rotatedAt and source are shown in clear by the status list: they are part of the
    associated data, so editing any of them in the store makes the record unreadable (tampering)."""
    record = decode_record(encode_record(sealed()), "binance", "testnet")
    assert open_record(KEY, record, "binance", "testnet") == KEYS
    edited = msgspec.structs.replace(record, **change)
    with pytest.raises(TamperedRecord, match="keyLast4"):
        open_record(KEY, edited, "binance", "testnet")


def test_a_rotated_record_binds_its_rotation_time():
    record = seal(KEY, "binance", "live", KEYS, stored_at=1_000, rotated_at=5_000, source="api")
    assert open_record(KEY, record, "binance", "live") == KEYS
    with pytest.raises(TamperedRecord):
        open_record(KEY, msgspec.structs.replace(record, rotated_at=None), "binance", "live")


# -- the key ------------------------------------------------------------------------------------------
def test_raw_key_forms():
    hexed, b64 = RAW.hex(), base64.b64encode(RAW).decode()
    assert raw_key_of(hexed) == RAW
    assert raw_key_of(hexed.upper()) == RAW
    assert raw_key_of("base64:" + b64.rstrip("=")) == RAW
    assert raw_key_of("base64:" + base64.urlsafe_b64encode(b"\xfb" * 32).decode()) == b"\xfb" * 32
    assert raw_key_of("hex:" + hexed) == RAW
    assert raw_key_of("base64:" + b64) == RAW
    for key in (hexed, "base64:" + b64, "hex:" + hexed):
        assert EncryptionKey.from_setting(key).key == RAW
        assert EncryptionKey.from_setting(key).kind == "raw"


@pytest.mark.parametrize(
    "setting",
    [
        PASSPHRASE, RAW.hex()[:-2], base64.b64encode(bytes(31)).decode(), base64.b64encode(bytes(33)).decode(),
        # unprefixed base64 of 32 bytes (43/44 characters): a passphrase too, stretched by the KDF - only base64:
        # says "raw key"
        base64.b64encode(RAW).decode(), base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "Correct-Horse-Battery-Staple-0123456789abcdefgh",
    ],
)  # fmt: skip
def test_anything_else_is_a_passphrase(setting):
    assert raw_key_of(setting) is None
    assert is_passphrase(setting)


@pytest.mark.parametrize("setting", ["hex:abcd", "hex:" + "zz" * 32, "base64:" + base64.b64encode(bytes(16)).decode()])
def test_a_prefixed_key_that_does_not_decode_is_refused(setting):
    with pytest.raises(InvalidCredential) as info:
        raw_key_of(setting)
    assert info.value.field == "CREDENTIAL_ENCRYPTION_KEY"


def test_no_key_is_refused():
    with pytest.raises(NoEncryptionKey, match="CREDENTIAL_ENCRYPTION_KEY is not set"):
        EncryptionKey.from_setting("  ")


def test_passphrase_goes_through_scrypt_with_the_deployment_salt():
    kdf = new_kdf_params()
    assert (kdf.name, kdf.n, kdf.r, kdf.p) == ("scrypt", 2**15, 8, 1)
    assert len(base64.b64decode(kdf.salt)) == 16
    key = EncryptionKey.from_setting(PASSPHRASE, kdf)
    assert key.kind == "passphrase"
    assert key.key != PASSPHRASE.encode()[:32] and len(key.key) == 32
    # the same passphrase and salt give the same key (another host, a restart): records open
    again = EncryptionKey.from_setting(PASSPHRASE, KdfParams(salt=kdf.salt))
    assert again.key == key.key and again.key_id == key.key_id
    record = seal(key, "kraken", "live", KEYS, stored_at=1)
    assert open_record(again, record, "kraken", "live") == KEYS


def test_kdf_salt_reuse_and_salt_change():
    """One salt per deployment: the same salt derives the same key again; another salt (another deployment, or
    a lost salt) derives another key, whose records are refused as a wrong key - not as tampered."""
    a, b = new_kdf_params(), new_kdf_params()
    assert a.salt != b.salt
    key_a, key_b = EncryptionKey.from_setting(PASSPHRASE, a), EncryptionKey.from_setting(PASSPHRASE, b)
    assert key_a.key != key_b.key and key_a.key_id != key_b.key_id
    assert derive_key(PASSPHRASE, a) == key_a.key
    record = seal(key_a, "binance", "live", KEYS, stored_at=1)
    with pytest.raises(WrongKey):
        open_record(key_b, record, "binance", "live")


def test_passphrase_needs_the_salt():
    with pytest.raises(ValueError, match="salt"):
        EncryptionKey.from_setting(PASSPHRASE)


def test_damaged_kdf_parameters_are_refused():
    with pytest.raises(TamperedRecord, match="not base64"):
        derive_key(PASSPHRASE, KdfParams(salt="!!!"))
    with pytest.raises(TamperedRecord, match="out of range"):
        derive_key(PASSPHRASE, KdfParams(salt=base64.b64encode(bytes(16)).decode(), n=2))
    with pytest.raises(TamperedRecord, match="unknown key derivation"):
        derive_key(PASSPHRASE, KdfParams(name="md5", salt=base64.b64encode(bytes(16)).decode()))


# -- what is sealed -----------------------------------------------------------------------------------
def test_venue_keys_never_show_in_repr():
    text = repr(KEYS) + str(KEYS) + repr(KEY)
    for secret in (KEYS.api_key, KEYS.api_secret, KEYS.password, RAW.hex()):
        assert secret not in text


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        (("", "s"), "apiKey", "must not be empty"),
        (("k", " "), "apiSecret", "must not be empty"),
        (("k ", "s"), "apiKey", "white space"),
        (("k", "s\n1"), "apiSecret", "control characters"),
        (("k", "s", "x" * 5000), "password", "longer than"),
    ],
)
def test_bad_keys_name_the_field(fields, field, reason):
    with pytest.raises(InvalidCredential) as info:
        VenueKeys(*fields)
    assert info.value.field == field and reason in info.value.reason


def test_a_short_api_key_shows_no_characters():
    assert VenueKeys("abcd1234", "s").last4 == ""
    assert VenueKeys("abcdefgh12345678", "s").last4 == "5678"


@pytest.mark.parametrize(
    ("venue", "environment", "field"), [("Binance", "live", "exchange"), ("binance", "prod", "environment")]
)
def test_bad_venue_or_environment_names_the_field(venue, environment, field):
    with pytest.raises(InvalidCredential) as info:
        seal(KEY, venue, environment, KEYS, stored_at=1)
    assert info.value.field == field


# -- property: every secret survives the round trip, and every single-byte change is caught -------------
printable = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(
    api_key=printable.filter(bool),
    api_secret=printable.filter(bool),
    password=printable,
    venue=st.from_regex(r"[a-z0-9_]{2,40}", fullmatch=True),
    environment=st.sampled_from(ENVIRONMENTS),
    raw=st.binary(min_size=32, max_size=32),
    flip_at=st.integers(min_value=0),
)
def test_property_round_trip_and_tamper(api_key, api_secret, password, venue, environment, raw, flip_at):
    key = EncryptionKey(raw, "raw")
    keys = VenueKeys(api_key, api_secret, password)
    record = decode_record(encode_record(seal(key, venue, environment, keys, stored_at=7)), venue, environment)
    assert open_record(key, record, venue, environment) == keys
    ct = base64.b64decode(record.ciphertext)
    bad = msgspec.structs.replace(record, ciphertext=flip(record.ciphertext, flip_at % len(ct)))
    with pytest.raises(TamperedRecord):
        open_record(key, bad, venue, environment)


# -- the settings ----------------------------------------------------------------------------------------
def test_setting_refuses_a_short_passphrase_without_showing_it():
    with pytest.raises(ConfigError) as info:
        load_settings({"CREDENTIAL_ENCRYPTION_KEY": "hunter2"})
    message = str(info.value)
    assert message.startswith("CREDENTIAL_ENCRYPTION_KEY='***' is not allowed: ")
    assert "at least 16 characters" in message and "hunter2" not in message


def test_setting_refuses_a_bad_prefixed_key_without_showing_it():
    with pytest.raises(ConfigError) as info:
        load_settings({"CREDENTIAL_ENCRYPTION_KEY": "hex:abcdef"})
    assert "abcdef" not in str(info.value) and "64 hex characters" in str(info.value)


@pytest.mark.parametrize("value", [RAW.hex(), "base64:" + base64.b64encode(RAW).decode(), PASSPHRASE])
def test_setting_accepts_keys_and_passphrases_and_hides_them(value):
    s = load_settings({"CREDENTIAL_ENCRYPTION_KEY": value})
    assert value == s.CREDENTIAL_ENCRYPTION_KEY
    assert s.redacted()["CREDENTIAL_ENCRYPTION_KEY"] == "***"


def test_vault_needs_endpoint_and_token():
    with pytest.raises(ConfigError, match="VAULT_ENDPOINT and VAULT_TOKEN are not set"):
        load_settings({"VAULT_ENABLED": "true"})
    with pytest.raises(ConfigError, match="VAULT_TOKEN is not set"):
        load_settings({"VAULT_ENABLED": "true", "VAULT_ENDPOINT": "http://127.0.0.1:8200"})
    s = load_settings({"VAULT_ENABLED": "true", "VAULT_ENDPOINT": "http://127.0.0.1:8200", "VAULT_TOKEN": "t0k"})
    assert s.redacted()["VAULT_TOKEN"] == "***"
