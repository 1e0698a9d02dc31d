"""Request schemas of the model lifecycle routes: models, endpoints, batch inference, datasets.

Field names are SageMaker's (Essedum sends them unchanged); the patterns are those of the botocore
model, so a bad name is a 4xx from us instead of a ValidationException from AWS.
"""
from __future__ import annotations

from api.schemas import ENV_NAME, NO_NUL, TAGS, ZERO_IS_ABSENT, text
from mlops.job_ids import ID_PREFIX_PATTERN

# ModelName, EndpointName, EndpointConfigName, TransformJobName and VariantName share this rule.
RESOURCE_NAME = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
ROLE_ARN = "^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$"
S3_URI = "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
INSTANCE_TYPE = "^ml\\.[a-z0-9-]+\\.[a-z0-9]+$"


def name(description: str) -> dict:
    return text(63, pattern=RESOURCE_NAME, description=description)


ENVIRONMENT = {
    "type": "object", "maxProperties": 100,
    "propertyNames": {"pattern": ENV_NAME, "maxLength": 1024},
    "additionalProperties": {"type": "string", "maxLength": 1024, "pattern": NO_NUL},
}

CONTAINER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ContainerHostname": name("host name of the container in a multi-container model"),
        "Image": text(255, description="inference image URI (default: the AWS PyTorch inference image)"),
        "Mode": {"type": "string", "enum": ["SingleModel", "MultiModel"]},
        "ModelDataUrl": text(1024, description="s3:// URI of model.tar.gz; locally a model folder in the "
                                                "storage root"),
        "Environment": ENVIRONMENT,
    },
}

TRAINING_JOB = text(36, pattern=ID_PREFIX_PATTERN, description="a finished training job of this executor (its id, "
                                                                 "or a unique beginning of 4 characters or more): "
                                                                 "its model and the matching inference image are "
                                                                 "filled in")

MODEL = {
    "title": "RegisterModel",
    "description": "Register a model: SageMaker CreateModel, or a local model folder.",
    "type": "object",
    "additionalProperties": False,
    "required": ["ModelName"],
    "properties": {
        "ModelName": name("model name"),
        "ExecutionRoleArn": text(2048, pattern=ROLE_ARN),
        "Containers": {"type": "array", "minItems": 1, "maxItems": 15, "items": CONTAINER},
        "PrimaryContainer": CONTAINER,
        "TrainingJobId": TRAINING_JOB,
        "InstanceType": text(64, pattern=INSTANCE_TYPE, description="picks the CPU or GPU inference image"),
        "Description": {"type": "string", "maxLength": 1024},
        "Tags": TAGS,
    },
}

ENDPOINT_CONFIG = {
    "title": "RegisterEndpoint",
    "description": "Create an endpoint configuration (and its model when PrimaryContainer or TrainingJobId "
                   "is given).",
    "type": "object",
    "additionalProperties": False,
    "required": ["ModelName", "EndpointConfigName"],
    "properties": {
        "ExecutionRoleArn": text(2048, pattern=ROLE_ARN),
        "ModelName": name("the model the endpoint serves"),
        "VariantName": name("production variant name (default AllTraffic)"),
        "InitialInstanceCount": {"type": "integer", "minimum": 1, "maximum": 100, ZERO_IS_ABSENT: True,
                                 "description": "default 1; 0 (what the backend sends when unset) means 1"},
        "InstanceType": text(64, pattern=INSTANCE_TYPE),
        "EndpointConfigName": name("endpoint configuration name"),
        "PrimaryContainer": CONTAINER,
        "TrainingJobId": TRAINING_JOB,
        "Description": {"type": "string", "maxLength": 1024},
        "Tags": TAGS,
    },
}

DEPLOY = {
    "title": "DeployModel",
    "description": "Create the endpoint, or update it to a new configuration when it exists.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "EndpointConfigName": name("endpoint configuration to deploy"),
        "EndpointName": name("endpoint name (default: the id in the path)"),
        "Tags": TAGS,
    },
}

S3_DATA_SOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["S3Uri"],
    "properties": {
        "S3DataType": {"type": "string", "enum": ["S3Prefix", "ManifestFile", "AugmentedManifestFile"]},
        "S3Uri": text(1024, description="s3:// URI; locally a file or folder in the storage root"),
    },
}

TRANSFORM = {
    "title": "BatchTransform",
    "description": "Run batch inference with a registered model (SageMaker CreateTransformJob).",
    "type": "object",
    "additionalProperties": False,
    "required": ["TransformJobName", "ModelName", "TransformInput"],
    "properties": {
        "TransformJobName": name("transform job name, unique"),
        "ModelName": name("a registered model"),
        "TransformInput": {
            "type": "object",
            "additionalProperties": False,
            "required": ["DataSource"],
            "properties": {
                "DataSource": {"type": "object", "additionalProperties": False, "required": ["S3DataSource"],
                               "properties": {"S3DataSource": S3_DATA_SOURCE}},
                "ContentType": text(256),
                "CompressionType": {"type": "string", "enum": ["None", "Gzip"]},
                "SplitType": {"type": "string", "enum": ["None", "Line", "RecordIO", "TFRecord"]},
            },
        },
        "TransformOutput": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "S3OutputPath": text(1024, pattern=S3_URI),
                "Accept": text(256),
                "AssembleWith": {"type": "string", "enum": ["None", "Line"]},
                "KmsKeyId": text(2048),
            },
        },
        "TransformResources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "InstanceType": text(64, pattern=INSTANCE_TYPE),
                "InstanceCount": {"type": "integer", "minimum": 1, "maximum": 100},
                "VolumeKmsKeyId": text(2048),
            },
        },
        "DataProcessing": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "InputFilter": text(63),
                "OutputFilter": text(63),
                "JoinSource": {"type": "string", "enum": ["Input", "None"]},
            },
        },
        "MaxConcurrentTransforms": {"type": "integer", "minimum": 0, "maximum": 1000},
        "MaxPayloadInMB": {"type": "integer", "minimum": 0, "maximum": 100},
        "BatchStrategy": {"type": "string", "enum": ["MultiRecord", "SingleRecord"]},
        "Environment": ENVIRONMENT,
        "Tags": TAGS,
    },
}

# The dataset upload is multipart: these are its form fields (the file itself is `file`). The
# backend's file proxy sends the file alone; its name is then the key.
DATASET_FORM = {
    "title": "DatasetUploadFields",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "Bucket": text(63, pattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                       description="S3 bucket (default: the executor's bucket); locally a folder name"),
        "Key": text(1024, description="object key (default: the file's name); locally the relative path under "
                                      "datasets/<Bucket>/"),
        "Description": {"type": "string", "maxLength": 1024},
    },
}

DATASET_JSON = {
    "title": "DatasetFromStorage",
    "description": "Add a file of the executor's storage root as a dataset (the backend's JSON shape).",
    "type": "object",
    "additionalProperties": False,
    "required": ["local_dataset_path"],
    "properties": {
        **DATASET_FORM["properties"],
        "local_dataset_path": text(1024, description="a file inside the storage root"),
    },
}

EXPORT = {
    "title": "Export",
    "description": "Where an export goes: by default a download (local) or a presigned URL (SageMaker).",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "S3Uri": text(1024, pattern=S3_URI, description="SageMaker: copy the object(s) under this s3:// prefix, "
                                                        "in EXECUTOR_S3_BUCKET or EXECUTOR_EXPORT_BUCKETS"),
        "ExpiresIn": {"type": "integer", "minimum": 1, "maximum": 604800,
                      "description": "seconds a presigned URL stays valid (default 3600)"},
    },
}

# What the multipart routes read, for the OpenAPI document (the form's fields are validated with DATASET_FORM).
BINARY_FILE = {"type": "string", "contentMediaType": "application/octet-stream"}
DATASET_UPLOAD = {
    "title": "DatasetUpload",
    "description": "A dataset file to store (multipart/form-data).",
    "type": "object",
    "required": ["file"],
    "properties": {"file": {**BINARY_FILE, "description": "the file; its name is the key when Key is absent"},
                   **DATASET_FORM["properties"]},
}
INFERENCE_IMAGES = {
    "title": "InferenceImages",
    "description": "One or more images (PNG, JPEG, ...) in the 'file' field, each predicted.",
    "type": "object",
    "required": ["file"],
    "properties": {"file": {"type": "array", "minItems": 1, "maxItems": 256, "items": BINARY_FILE}},
}
INFERENCE_JSON = {
    "title": "InferencePayload",
    "description": "What the model's inference.py reads as JSON (the bundled one: {\"instances\": [...]} of pixel "
                   "arrays or base64 images), or {\"S3Uri\": \"s3://...\"} naming an object to send it.",
    "type": ["object", "array"],
}
INFERENCE_BODIES = {
    "multipart/form-data": INFERENCE_IMAGES,
    "application/json": INFERENCE_JSON,
    "text/csv": {"type": "string", "description": "rows the model's inference.py reads"},
    "image/png": {"type": "string", "contentMediaType": "image/png"},
    "image/jpeg": {"type": "string", "contentMediaType": "image/jpeg"},
}
