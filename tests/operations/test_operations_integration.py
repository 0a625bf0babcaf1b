"""Reconcile and preview on the embedded broker with a real worker: every command line docs/OPERATIONS.md and
docs/HTTP_API.md give for them runs exactly as written (through bash, from a directory holding the docs' example
files), and what they report, publish and correct is checked on the topics and against the worker's HTTP answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.kafka.broker import free_loopback_port
from app.wire.serialization import AvroCodec
from app.wire.topics import INVENTORY_EXCEPTIONS, availability_topic
from tests.service.harness import WORKER_READY, poll, read_topic, settings_environment, wait_for_ledger_entries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "operations-token-0123456789"
COMMAND_PREFIXES = ("availability reconcile", "availability preview", "availability produce --file docs/examples/")


def documented_command_lines() -> list[str]:
    """The reconcile, preview and example produce lines of the code blocks of docs/OPERATIONS.md, docs/HTTP_API.md
    (the preview curl line) and README.md, comments after `  #` dropped, each once, in the order given."""
    lines = []
    for doc in ("docs/OPERATIONS.md", "docs/HTTP_API.md", "README.md"):
        for block in re.findall(r"```[a-z]*\n(.*?)```", (REPO_ROOT / doc).read_text(), flags=re.S):
            for line in block.splitlines():
                command = line.removeprefix("$ ").split("  #", 1)[0].strip()
                wanted = command.startswith(COMMAND_PREFIXES) or (
                    command.startswith("curl") and "/policy/preview" in command)
                if wanted and command not in lines:
                    lines.append(command)
    return lines


def run_as_written(command: str, cwd: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=180)


def drift_records(servers: str, codec: AvroCodec, partitions: int, at_least: int) -> list[dict]:
    def drifts(records) -> list[dict]:
        values = [codec.decode(INVENTORY_EXCEPTIONS.name, record.value).value for record in records]
        return [value for value in values if value["kind"] == "RECONCILIATION_DRIFT"]

    return drifts(read_topic(servers, INVENTORY_EXCEPTIONS.name, partitions,
                             until=lambda records: len(drifts(records)) >= at_least, timeout=60))


def last_quantity(servers: str, codec: AvroCodec, channel: str, key: str, partitions: int,
                  wanted: int) -> None:
    topic = availability_topic(channel).name

    def reached(records) -> bool:
        values = [codec.decode(topic, record.value).value for record in records if record.key == key.encode()]
        return bool(values) and max(values, key=lambda value: value["version"])["quantity"] == wanted

    read_topic(servers, topic, partitions, until=reached, timeout=60, idle_seconds=0)


def test_the_documented_reconcile_and_preview_commands_run_as_written(service_settings, workers, topics_for,
                                                                      bootstrap_servers, tmp_path):
    commands = documented_command_lines()
    produce = [command for command in commands if command.startswith("availability produce")]
    reconciles = [command for command in commands if command.startswith("availability reconcile")]
    previews = [command for command in commands if command.startswith("availability preview")]
    curls = [command for command in commands if command.startswith("curl")]
    assert len(produce) == 2 and len(reconciles) == 3 and len(previews) == 2 and len(curls) == 1, commands

    settings = service_settings(partitions=4, api_token=TOKEN)
    source = topics_for(settings)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    web = httpx.Client(base_url=f"http://{settings.web_host}:{settings.web_port}",
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    poll(lambda: web.get("/ready"), lambda response: response.status_code == 200, 60, "/ready 200")
    (tmp_path / "docs").symlink_to(REPO_ROOT / "docs")  # the docs' relative paths, reports written here
    environment = {**settings_environment(settings), "TOKEN": TOKEN,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    codec = source.codec

    # the example's policy, on the ledger before its stock (docs/CONTRACT.md, "Before the first event")
    assert run_as_written(produce[0], tmp_path, environment).returncode == 0
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange")
    assert run_as_written(produce[1], tmp_path, environment).returncode == 0
    poll(lambda: web.get("/availability/SKU-A", params={"channel": "ecommerce"}),
         lambda r: r.status_code == 200 and r.json()["availability"][0]["quantity"] == 51, 60, "SKU-A at 51")
    poll(lambda: web.get("/availability/SKU-B", params={"channel": "ecommerce"}),
         lambda r: r.status_code == 200 and r.json()["availability"][0]["quantity"] == 12, 60, "SKU-B at 12")

    # 1. the report on the terminal: three drifts, line 7 not compared: exit 1 + 4
    first = run_as_written(reconciles[0], tmp_path, environment)
    assert first.returncode == 5, first.stderr
    assert "not compared: line 7: on_hand -4 is below zero" in first.stdout
    assert "3 drift (total +2 units, 8 absolute)" in first.stdout
    assert "availability impact if corrected: marketplace -2, store-pickup +3" in first.stdout
    assert "positions the export does not list were not compared" in first.stdout

    # 2. the same with report files
    second = run_as_written(reconciles[1], tmp_path, environment)
    assert second.returncode == 5, second.stderr
    report = json.loads((tmp_path / "drift.json").read_text())
    assert [(d["sku"], d["location"], d["bucket"], d["drift"]) for d in report["drifts"]] == [
        ("SKU-A", "DC1", "SELLABLE", -3), ("SKU-A", "S2", "SELLABLE", 3), ("SKU-B", "DC1", "DAMAGED", 2)]
    assert report["impact_by_channel"] == {"marketplace": -2, "store-pickup": 3}
    assert report["bad_rows"] == [{"line": 7, "problem": "on_hand -4 is below zero"}]
    assert (tmp_path / "drift.csv").read_text().splitlines()[1:] == [
        "2,SKU-A,DC1,SELLABLE,37,40,-3,no", "4,SKU-A,S2,SELLABLE,9,6,3,no", "6,SKU-B,DC1,DAMAGED,2,0,2,no"]
    records = drift_records(bootstrap_servers, codec, settings.partitions, at_least=6)
    assert sorted((r["sku"], r["location"], r["bucket"], r["quantity"], r["event_time"]) for r in records) == sorted(
        2 * [("SKU-A", "DC1", "SELLABLE", -3, report["as_of_ms"]), ("SKU-A", "S2", "SELLABLE", 3, report["as_of_ms"]),
             ("SKU-B", "DC1", "DAMAGED", 2, report["as_of_ms"])])
    assert all(r["event_id"] is None and r["ledger_partition"] is None for r in records)

    # 3. --apply: cycle counts through the ledger; marketplace (half of DC1, capped at 20) shows 18, S2 pickup 8
    applied = run_as_written(reconciles[2], tmp_path, environment)
    assert applied.returncode == 5, applied.stderr
    assert "2 corrections written to source.stock-movements" in applied.stdout
    last_quantity(bootstrap_servers, codec, "marketplace", "SKU-A", settings.partitions, 18)
    last_quantity(bootstrap_servers, codec, "store-pickup", "SKU-A/S2", settings.partitions, 8)
    # replayable: the corrections are on the ledger, so the same export now drifts only where nothing corrects
    again = run_as_written(reconciles[1], tmp_path, environment)
    assert again.returncode == 5, again.stderr
    assert [(d["sku"], d["bucket"]) for d in json.loads((tmp_path / "drift.json").read_text())["drifts"]] == [
        ("SKU-B", "DAMAGED")]
    # the workers count what reconcile published
    poll(lambda: web.get("/metrics").text,
         lambda text: 'availability_reconciliation_drifts_total{bucket="SELLABLE"} 6.0' in text
         and 'availability_reconciliation_drift_units_total{bucket="DAMAGED"} 8.0' in text, 60, "drift metrics")

    # preview: the command (changelogs) and the worker (its states) agree, once the changelogs hold the states
    assert run_as_written(previews[0], tmp_path, environment).returncode == 0

    def both():
        command = run_as_written(previews[1], tmp_path, environment)
        assert command.returncode == 0, command.stderr
        answer = run_as_written(curls[0], tmp_path, environment)
        assert answer.returncode == 0, answer.stderr
        return json.loads((tmp_path / "preview.json").read_text()), json.loads(answer.stdout)

    from_changelogs, from_worker = poll(both, lambda pair: pair[0]["channels"] == pair[1]["channels"], 60,
                                        "preview and POST /policy/preview agree")
    channels = from_worker["channels"]
    assert set(channels) == {"marketplace", "store-pickup"}
    assert (channels["marketplace"]["units_gained"], channels["marketplace"]["units_lost"]) == (25, 0)
    assert [(c["sku"], c["before"], c["after"]) for c in channels["marketplace"]["largest"]] == [
        ("SKU-A", 18, 37), ("SKU-B", 6, 12)]
    assert (channels["store-pickup"]["changed_keys"], channels["store-pickup"]["units_lost"]) == (2, 4)
    assert from_worker["partitions"] == [0, 1, 2, 3] and from_worker["scope"] == "cluster"
    # nothing was published by the previews: marketplace still shows 18 for SKU-A
    lookup = web.get("/availability/SKU-A", params={"channel": "marketplace"}).json()
    assert lookup["availability"][0]["quantity"] == 18


def test_the_cluster_preview_merges_two_workers_and_an_invalid_policy_is_a_400(service_settings, workers,
                                                                             topics_for, bootstrap_servers):
    first = service_settings(partitions=4)
    second = first.model_copy(update={"web_port": free_loopback_port(), "data_dir": first.data_dir / "second"})
    topics_for(first)
    running = [workers(first), workers(second)]
    webs = [httpx.Client(base_url=f"http://{s.web_host}:{s.web_port}", timeout=60) for s in (first, second)]
    for worker in running:
        worker.wait_for_log(WORKER_READY, timeout=90)
    poll(lambda: [web.get("/ready").json()["active_partitions"] for web in webs],
         lambda held: sorted(p for partitions in held for p in partitions) == [0, 1, 2, 3], 90,
         "the partitions split between the two workers")
    candidate = (REPO_ROOT / "docs" / "examples" / "candidate-policy.json").read_text()
    headers = {"Content-Type": "application/json"}
    own = [web.post("/policy/preview?scope=worker", content=candidate, headers=headers).json() for web in webs]
    assert sorted(own[0]["partitions"] + own[1]["partitions"]) == [0, 1, 2, 3]
    assert own[0]["partitions"] and own[1]["partitions"]
    cluster = poll(lambda: webs[0].post("/policy/preview", content=candidate, headers=headers),
                   lambda r: r.status_code == 200, 60, "a cluster answer")
    assert cluster.json()["partitions"] == [0, 1, 2, 3] and cluster.json()["scope"] == "cluster"

    broken = json.loads(candidate)
    broken["channels"][1]["share_bp"] = "half"
    refused = webs[0].post("/policy/preview", json=broken)
    assert refused.status_code == 400
    assert refused.json() == {"error": 'channels[1].share_bp: expected an integer, got "half"'}
    assert webs[0].post("/policy/preview?scope=everyone", content=candidate, headers=headers).status_code == 400
    assert webs[0].post("/policy/preview", content=candidate).status_code == 415

    running[1].stop(grace_seconds=10)  # its partitions answered by nobody until the group rebalances
    answer = webs[0].post("/policy/preview", content=candidate, headers=headers)
    if answer.status_code == 503:
        assert answer.headers["Retry-After"] == "1" and "partitions" in answer.json()["error"]
    else:  # the survivor already took every partition over
        assert answer.status_code == 200 and answer.json()["partitions"] == [0, 1, 2, 3]
