"""How many NVIDIA GPUs each SageMaker training instance type has: whether a job needs torchrun.

Counts from AWS's instance type documentation (Amazon EC2 "Accelerated computing" specifications,
https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html; SageMaker's ml.* types are those EC2
types), for the GPU types of botocore's TrainingInstanceType enum. The test suite checks them
against the table AWS maintains in sagemaker-core (image_uri_config/instance_gpu_info.json) where
that table has the type. A type that is not here counts as one GPU or none: such a job gets torchrun
only when it runs on more than one instance.
"""
from __future__ import annotations

_BY_FAMILY: dict[str, dict[str, int]] = {
    "p2": {"xlarge": 1, "8xlarge": 8, "16xlarge": 16},
    "p3": {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8},
    "p3dn": {"24xlarge": 8},
    "p4d": {"24xlarge": 8},
    "p4de": {"24xlarge": 8},
    "p5": {"4xlarge": 1, "48xlarge": 8},
    "p5e": {"48xlarge": 8},
    "p5en": {"48xlarge": 8},
    "p6-b200": {"48xlarge": 8},
    "p6-b300": {"48xlarge": 8},
    "p6e-gb200": {"36xlarge": 4},
    "g4dn": {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4},
    "g5": {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4, "24xlarge": 4,
           "48xlarge": 8},
    "g6": {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4, "24xlarge": 4,
           "48xlarge": 8},
    "g6e": {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4, "24xlarge": 4,
            "48xlarge": 8},
}
GPU_COUNTS: dict[str, int] = {f"ml.{family}.{size}": count
                              for family, sizes in _BY_FAMILY.items() for size, count in sizes.items()}


def gpu_count(instance_type: str) -> int:
    """Return the NVIDIA GPUs of one instance of a training instance type (0 when not known to have any)."""
    return GPU_COUNTS.get(instance_type, 0)


def needs_torchrun(instance_type: str, instance_count: int) -> bool:
    """Say whether a job must be launched with torchrun to use every GPU it pays for."""
    return instance_count > 1 or gpu_count(instance_type) > 1
