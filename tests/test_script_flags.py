"""A script's flags arrive the same way on both platforms: as SageMaker's training toolkit passes them."""
from __future__ import annotations

import pytest

from conftest import pipeline_body, wait_final, write_pipeline
from mlops.errors import InvalidRequest
from mlops.script_contract import flag_pairs, pipeline_arguments, script_flags

ARGV_SCRIPT = "import sys\nprint('argv', sys.argv[1:])\n"


def test_flags_are_sorted_and_one_letter_names_take_one_dash():
    # sagemaker_training.mapping.to_cmd_args (aws/sagemaker-training-toolkit): sorted names, "-x" for one letter.
    assert script_flags({"lr": "0.1", "x": "1", "epochs": "3"}) == ["--epochs", "3", "--lr", "0.1", "-x", "1"]


def test_a_command_reads_as_the_pairs_it_names():
    assert flag_pairs(["-x", "1", "--label=abc", "--lr", "0.1", "-y=2"]) == {"x": "1", "label": "abc", "lr": "0.1",
                                                                           "y": "2"}


@pytest.mark.parametrize("args", [["positional"], ["--lr"], ["--lr", "1", "--lr", "2"], ["-xy", "1"]])
def test_arguments_that_are_not_name_value_pairs_are_refused_for_sagemaker(args):
    with pytest.raises(InvalidRequest):
        flag_pairs(args)


def test_arguments_other_than_pairs_run_locally_as_written():
    assert pipeline_arguments(["data.csv", "--fast"]) == ["data.csv", "--fast"]


def test_a_local_pipeline_gets_its_flags_as_sagemaker_would_pass_them(live_server):
    server = live_server()
    folder = write_pipeline(server.executor.config.storage_root, "Demo/flags/pipe1", ARGV_SCRIPT)
    status, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py --x 1 --lr=0.1 -b 8"))
    assert status == 201
    assert wait_final(server, accepted["task_id"])["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    assert "argv ['-b', '8', '--lr', '0.1', '-x', '1']" in log["logs"]["content"]
