"""`service.keys`: keys from the environment and a file, added and revoked without a restart."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal

import pytest

from service.keys import KeyRing, digest, open_to_others, parse_keys, reload_keys_on_sighup

HEX64 = "ab" * 32


def test_a_keys_file_holds_plain_keys_and_sha256_digests():
    beta = hashlib.sha256(b"beta").hexdigest()
    text = f"# the keys\nalpha\n\n  sha256:{beta.upper()}  \n{HEX64}\nwith spaces inside\n"
    assert parse_keys(text) == [digest("alpha"), bytes.fromhex(beta), digest(HEX64), digest("with spaces inside")]


def test_keys_are_added_and_revoked_when_the_file_changes(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"alpha\nsha256:{hashlib.sha256(b'beta').hexdigest()}\n")
    ring = KeyRing("static", path)
    assert ring.required and all(ring.valid(k) for k in ("alpha", "beta", "static"))
    assert not ring.valid("gamma") and not ring.valid("") and not ring.valid("sha256:" + "0" * 64)
    path.write_text("beta\ngamma\n")  # alpha revoked, gamma added: no restart
    assert not ring.valid("alpha") and ring.valid("gamma") and ring.valid("beta")
    replacement = tmp_path / "keys.new"  # an atomic replace (a new inode), as editors and config tools do
    replacement.write_text("delta\n")
    os.replace(replacement, path)
    assert ring.valid("delta") and not ring.valid("gamma")
    path.unlink()  # unreadable: its keys are refused (fail closed), the environment's key still works
    assert not ring.valid("delta") and ring.valid("static")
    path.write_text("delta\n")
    assert ring.valid("delta")


def test_no_key_configured_requires_none_and_a_missing_file_stops_the_start(tmp_path):
    assert not KeyRing().required
    with pytest.raises(ValueError, match="STTM_API_KEYS_FILE .*No such file"):
        KeyRing(None, tmp_path / "missing")


def test_a_keys_file_saved_with_a_bom_accepts_its_first_key_and_one_not_in_utf8_stops_the_start(tmp_path):
    """Notepad's UTF-8 starts with a BOM: the first key was '\\ufeffalpha' and never matched."""
    (tmp_path / "keys").write_bytes(b"\xef\xbb\xbfalpha\r\nbeta\r\n")
    ring = KeyRing(None, tmp_path / "keys")
    assert ring.valid("alpha") and ring.valid("beta") and not ring.valid("\ufeffalpha")
    (tmp_path / "latin1").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"STTM_API_KEYS_FILE .*latin1: not UTF-8 text \(at byte 3\)$"):
        KeyRing(None, tmp_path / "latin1")


def test_listening_beyond_this_machine_without_a_key_is_named():
    """What the start-up warning is given on: every interface or a name, and no key."""
    for host in ("0.0.0.0", "::", "192.168.1.5", "sttm.example"):
        assert open_to_others(host, KeyRing()), host
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert not open_to_others(host, KeyRing()), host
    assert not open_to_others("0.0.0.0", KeyRing("a-key"))


def test_the_start_warns_when_open_to_others(tmp_path, caplog):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    model = tmp_path / "missing.onnx"  # not served: the warning comes before the model loads
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        caplog.clear()
        with TestClient(create_app(Settings(model=model, host=host, require_model=False))):
            pass
        assert ("listening on 0.0.0.0 with no API key" in caplog.text) is warned, host


def test_sighup_rereads_a_file_whose_time_and_size_did_not_change(tmp_path):
    path = tmp_path / "keys"
    path.write_text("alpha\n")
    ring = KeyRing(None, path)
    st = os.stat(path)
    with open(path, "r+") as f:  # same size, same inode, the old modification time put back
        f.write("omega\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ring.valid("alpha")  # nothing the file's stamp shows changed

    async def hup() -> None:
        with reload_keys_on_sighup(ring):
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.sleep(0.05)  # the loop runs the handler

    asyncio.run(hup())
    assert ring.valid("omega") and not ring.valid("alpha")
