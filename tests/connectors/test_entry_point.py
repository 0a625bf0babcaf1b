"""`python -m app.connectors`: argument handling (no broker)."""

from __future__ import annotations

import pytest

from app.connectors.__main__ import EXIT_USER_ERROR, build_parser, main


def test_webhook_needs_a_url(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--channel", "ecommerce", "--sink", "webhook"])
    assert exit_info.value.code == 2
    assert "--sink webhook needs --url" in capsys.readouterr().err


def test_unknown_channel_is_one_line_error(capsys, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("AVAILABILITY_CHANNELS", raising=False)
    assert main(["--channel", "nowhere"]) == EXIT_USER_ERROR
    assert "channel 'nowhere' is not configured" in capsys.readouterr().err


def test_defaults() -> None:
    args = build_parser().parse_args(["--channel", "ecommerce"])
    assert (args.sink, args.view_file, args.failure_threshold, args.cooldown) == ("log", None, 5, 30.0)
