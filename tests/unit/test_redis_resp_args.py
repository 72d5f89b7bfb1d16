"""``RespArgs``: arguments written in Redis's wire form pack to the same bytes as hiredis packs them."""

from __future__ import annotations

from typing import Any

from hiredis import pack_command as _pack

from agent_service.adapters.redis_pipeline import HiredisPackConnection, RespArgs, bulk

pack_command: Any = _pack  # its stub types the argument tuple as one element


def _wire(values: list[bytes]) -> RespArgs:
    parts: list[bytes] = []
    for v in values:
        parts += (bulk(len(v)), v)
    return RespArgs(len(values), b"\r\n".join([*parts, b""]))


def test_trailing_resp_args_pack_as_the_flat_command() -> None:
    conn = HiredisPackConnection()
    values = [b"", b"0", b"claim:r1:1", b"x" * 5_000, "é".encode(), b"\r\n$3\r\n", b"y" * 4_095, b"z" * 4_096]
    for head in ([b"EVALSHA", b"a" * 40, 0, b"gaelp:", b"1382400"], ["EVALSHA", "sha", 0]):
        packed = b"".join(conn.pack_command(*head, _wire(values)))
        assert packed == pack_command((*head, *values))
    assert b"".join(conn.pack_command("EVALSHA", "sha", 0, _wire([]))) == pack_command(("EVALSHA", "sha", 0))
