"""The status words declared in mlops/aws_statuses.py are AWS's own, held to botocore's SageMaker model."""
from __future__ import annotations

import pytest

from api.views import AWS_STATUS_OF
from job import JobStatus
from mlops import aws_statuses as words
from mlops.sagemaker.validation import sagemaker_model


def enum(shape: str) -> set[str]:
    return set(sagemaker_model().shape_for(shape).enum)


@pytest.mark.parametrize("states, shape", [(words.TRAINING_STATES, "TrainingJobStatus"),
                                           (words.TRANSFORM_STATES, "TransformJobStatus"),
                                           (words.AUTOML_STATES, "AutoMLJobStatus"),
                                           (words.TUNING_STATES, "HyperParameterTuningJobStatus")])
def test_each_job_familys_words_sort_every_status_aws_answers_once(states, shape):
    assert states.non_terminal_states | states.terminal_states == enum(shape)
    assert not states.non_terminal_states & states.terminal_states
    assert states.stoppable_states <= states.non_terminal_states


def test_the_endpoint_words_are_aws_endpoint_statuses():
    endpoint = enum("EndpointStatus")
    assert words.ENDPOINT_NON_TERMINAL_STATES | words.ENDPOINT_FAILED_STATES <= endpoint
    assert {words.IN_SERVICE, words.CREATING, words.UPDATING} <= endpoint
    assert not words.ENDPOINT_NON_TERMINAL_STATES & (words.ENDPOINT_FAILED_STATES | {words.IN_SERVICE})


def test_every_job_status_has_its_aws_word_and_a_queued_job_reads_pending():
    assert set(AWS_STATUS_OF) == set(JobStatus)
    assert set(AWS_STATUS_OF.values()) - {words.PENDING} <= enum("TrainingJobStatus")
    assert words.PENDING in enum("SecondaryStatus")
    assert {AWS_STATUS_OF[status] for status in JobStatus if status.is_final} == words.TRAINING_STATES.terminal_states
