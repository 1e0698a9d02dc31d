"""The Amazon SageMaker platform: jobs, AutoML, model serving and logs on SageMaker."""
