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


# ----------------------------------------------------------------------------------- availability connect, as documented
def test_availability_connect_help_lists_the_connector_options() -> None:
    from tests.commands import run_cli

    result = run_cli("connect", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--channel", "--sink", "--url", "--group-id", "--view-file", "--failure-threshold", "--cooldown",
                   "--from-snapshot"):
        assert option in result.stdout, option


def test_both_command_lines_share_one_definition_of_the_options() -> None:
    from app.tools.cli import build_parser as availability_parser

    connector_options = {action.dest for action in build_parser()._actions} - {"bootstrap_servers", "help"}
    connect = availability_parser().parse_args(["connect", "--channel", "ecommerce", "--sink", "webhook", "--url",
                                                "http://127.0.0.1:1/x", "--from-snapshot"])
    assert connector_options <= set(vars(connect))
    assert (connect.channel, connect.sink, connect.from_snapshot) == ("ecommerce", "webhook", True)


@pytest.mark.integration
def test_availability_connect_as_documented_logs_each_change_and_stops_on_ctrl_c(
        bootstrap_servers: str, settings_factory) -> None:
    """docs/CONNECTORS.md and README: `availability connect --channel ecommerce --sink log`."""
    from confluent_kafka import Producer

    from app.kafka.admin import create_topics
    from app.wire.serialization import AvroCodec
    from app.wire.topics import availability_topic
    from tests.commands import RunningCommand
    from tests.connectors.records import encoded

    settings = settings_factory()  # a unique app id, so the connector's group is new and reads from the beginning
    create_topics(settings, bootstrap_servers)
    key = f"CONNECT-{settings.app_id}"
    topic = availability_topic("ecommerce").name
    written: list[tuple[int, int]] = []  # (partition, offset) of each record, from the delivery reports
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for version in (1, 2):
        producer.produce(topic, key=key.encode(), value=encoded(AvroCodec(settings), "ecommerce", key, version),
                         on_delivery=lambda error, message: written.append((message.partition(), message.offset())))
    assert producer.flush(10) == 0 and len(written) == 2

    environment = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers, "AVAILABILITY_APP_ID": settings.app_id}
    with RunningCommand("connect", "--channel", "ecommerce", "--sink", "log", env=environment) as connector:
        connector.wait_for_line(rf"ecommerce {key} v1 quantity=", timeout=60, stream="stderr")
        connector.wait_for_line(rf"ecommerce {key} v2 quantity=", timeout=30, stream="stderr")
        assert connector.interrupt() == 0, connector.output
    assert not any("Traceback" in line for line in connector.stderr_lines), connector.output

    # Stopped cleanly: what the sink accepted was committed for the group.
    from tests.service.harness import committed_offsets

    committed = committed_offsets(bootstrap_servers, f"{settings.app_id}.connector.ecommerce", [topic],
                                  settings.partitions)
    for partition, offset in written:
        assert committed[(topic, partition)] > offset, committed
