"""The iPinYou test-run ledger and the validation split's format: a run on the test log's bytes is
always recorded (wherever the file lies), a run on any other log never; the published code's
validation file loads as a log; the agent's replan rebuilds RLB's value function online."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent_service.errors import DecodeError
from agent_service.lab.ipinyou.bidder import GaelpBidder, train_offline
from agent_service.lab.ipinyou.runner import is_test_log, record_test_run
from simulators.ipinyou.config import default_data_dir
from simulators.ipinyou.data import load_log
from simulators.ipinyou.replay import replay
from tests.test_ipinyou_agent import INFO, TINY, N, tiny_setup

TEST_LOG = default_data_dir() / "test.theta.txt"


@pytest.mark.skipif(not TEST_LOG.is_file(), reason="the iPinYou test log is not shipped here")
def test_a_run_on_the_test_logs_bytes_is_ledgered_and_others_are_not(tmp_path: Path) -> None:
    copy = tmp_path / "renamed.txt"
    shutil.copyfile(TEST_LOG, copy)  # another name and folder: still the test log
    other = tmp_path / "other.txt"
    other.write_bytes(TEST_LOG.read_bytes()[:-1])  # one byte less: not the test log
    ledger = tmp_path / "ledger.jsonl"
    root = Path(__file__).resolve().parents[1]
    assert is_test_log(copy) and is_test_log(TEST_LOG.parent) and not is_test_log(other)
    assert record_test_run(other, root, {"x": 1}, {"clicks": 1}, ledger) is None and not ledger.exists()
    entry = record_test_run(copy, root, {"x": 1}, {"clicks": 2}, ledger)
    assert entry is not None
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["result"] == {"clicks": 2} and lines[0]["config"] == {"x": 1}
    assert lines[0]["commit"] and len(lines[0]["config_hash"]) == 16


def test_the_rlb_codes_validation_format_loads_and_a_plain_log_still_names_bad_lines(tmp_path: Path) -> None:
    rlb = tmp_path / "2997.validation.txt"
    rlb.write_text("133541\t1000\n1\n0\t222\t0.0066\n1\t18\t0.0036\n2\t5000\n0\t11\t0.0063\n")
    log = load_log(rlb)
    assert list(log.click) == [0, 1, 0] and list(log.price) == [222, 18, 11]
    np.testing.assert_allclose(log.pctr, [0.0066, 0.0036, 0.0063])
    plain = tmp_path / "plain.txt"
    plain.write_text("0 5 0.1\n1 10\n")
    with pytest.raises(DecodeError, match="plain.txt:2"):
        load_log(plain)


def test_replan_rebuilds_the_value_function_from_the_censored_price_model() -> None:
    plan, log = tiny_setup()
    cfg = replace(TINY, replan=True)
    agent = train_offline(INFO, plan, cfg, 0, episode_length=N)
    bidder = GaelpBidder(plan, INFO, agent, cfg, 0, episode_length=N)
    replay(log, plan.budget, bidder, episode_length=N, feedback="won")
    assert bidder.plan.table is not plan.table and bidder.plan.table.shape == plan.table.shape
    assert not np.allclose(bidder.plan.table, plan.table)  # the log's prices (5..89) are not the prior's
