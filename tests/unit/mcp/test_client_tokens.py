"""The clients file on disk (``supervisor.clients_file``) and the front's view of it
(``supervisor.mcp.client_tokens``): 0600 or refused, atomic writes, re-read on change, the last
good clients kept through a bad edit, never opened by deleting the file. Real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.clients_file import default_path, load, save
from supervisor.mcp.client_tokens import ClientTokens
from supervisor.rules.clients import FULL_ACCESS, Client, Clients, ClientsError, hash_token

ALICE = Client("alice", hash_token("tok-alice"), ("notes__*",))
BOB = Client("bob", hash_token("tok-bob"), ("*",), read_only=True)


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def test_save_writes_0600_and_load_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "clients.toml"
    save(path, Clients((ALICE, BOB)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path) == Clients((ALICE, BOB))
    assert [p.name for p in path.parent.iterdir()] == ["clients.toml"]  # no temp file left


def test_save_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    save(path, Clients((ALICE,)))
    before = path.stat().st_ino
    save(path, Clients((ALICE, BOB)))
    assert path.stat().st_ino != before  # renamed over, never rewritten in place


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "clients.toml"
    save(path, Clients((ALICE,)))
    path.chmod(mode)
    with pytest.raises(ClientsError) as err:
        load(path)
    assert f"mode {mode:o} lets others read the token hashes; it must be 0600" in str(err.value)
    with pytest.raises(ClientsError):
        ClientTokens(path)


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    save(real, Clients((ALICE,)))
    link = tmp_path / "clients.toml"
    link.symlink_to(real)
    with pytest.raises(ClientsError) as err:
        load(link)
    assert str(link) in str(err.value)


def test_no_file_no_tokens_required_until_one_appears(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    tokens = ClientTokens(path)
    tokens.refresh()
    assert not tokens.required
    save(path, Clients((ALICE,)))
    tokens.refresh()
    assert tokens.required
    assert tokens.identify(bearer("tok-alice")) == ALICE


def test_changes_are_picked_up_and_a_removed_client_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    save(path, Clients((ALICE, BOB)))
    tokens = ClientTokens(path)
    assert tokens.identify(bearer("tok-bob")) == BOB
    save(path, Clients((ALICE,)))
    tokens.refresh()
    assert tokens.identify(bearer("tok-bob")) is None
    assert tokens.identify(bearer("tok-alice")) == ALICE


def test_a_bad_edit_keeps_the_last_good_clients(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    save(path, Clients((ALICE,)))
    tokens = ClientTokens(path)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"[clients.alice\n")
    os.close(fd)
    tokens.refresh()
    assert tokens.identify(bearer("tok-alice")) == ALICE


def test_deleting_the_file_never_opens_the_front(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    save(path, Clients((ALICE,)))
    tokens = ClientTokens(path)
    path.unlink()
    tokens.refresh()
    assert tokens.required
    assert tokens.identify(bearer("tok-alice")) is None


def test_the_token_file_token_is_a_client_with_full_access(tmp_path: Path) -> None:
    tokens = ClientTokens(tmp_path / "absent.toml", b"legacy")
    assert tokens.required
    client = tokens.identify(bearer("legacy"))
    assert client is not None and client.name == FULL_ACCESS and client.everything
    assert tokens.identify(b"Basic legacy") is None
    assert tokens.identify(None) is None
    assert tokens.identify(bearer("legacy2")) is None


def test_a_chmod_that_lets_others_read_is_logged_and_the_last_good_clients_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clients.toml"
    save(path, Clients((ALICE,)))
    tokens = ClientTokens(path)
    path.chmod(0o644)
    with capture_logs() as logs:
        tokens.refresh()
        tokens.refresh()  # the same bad file: logged once
    refused = [e for e in logs if e["event"].startswith("clients file refused")]
    assert len(refused) == 1 and "mode 644" in refused[0]["error"], logs
    assert tokens.identify(bearer("tok-alice")) == ALICE
    path.chmod(0o600)
    save(path, Clients((BOB,)))
    tokens.refresh()
    assert tokens.identify(bearer("tok-alice")) is None
    assert tokens.identify(bearer("tok-bob")) == BOB


def test_the_default_path_is_in_the_state_directory(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path / "state"), "SPCTL_SOCKET": str(tmp_path / "s")}
    assert default_path(env) == tmp_path / "state" / "clients.toml"
    assert default_path(env, operator=True) == tmp_path / "state" / "clients.toml"
    env = {"SPCTL_SOCKET": str(tmp_path / "run" / "control.sock")}
    assert default_path(env, operator=True) == tmp_path / "run" / "clients.toml"
