"""An example Essedum pipeline script: prints metric lines as it 'trains' and writes its outputs.

The executor runs it under the SageMaker training-container contract: its outputs go to
$SM_MODEL_DIR and $SM_OUTPUT_DATA_DIR, and each `epoch=k/n name=value ...` line it prints becomes
progress and metrics of the job.
"""
import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--learning-rate", type=float, default=0.5)
parser.add_argument("--seconds-per-epoch", type=float, default=0.5)
args = parser.parse_args()

# A one-parameter model: gradient descent on (w - 3)^2, so that the numbers are real and repeatable.
weight = 0.0
for epoch in range(1, args.epochs + 1):
    time.sleep(args.seconds_per_epoch)
    weight -= args.learning_rate * 2 * (weight - 3)
    loss = (weight - 3) ** 2
    print(f"epoch={epoch}/{args.epochs} train_loss={loss:.6f} val_accuracy={1 / (1 + loss):.6f}", flush=True)

with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as handle:
    json.dump({"weight": weight}, handle)
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt"), "w") as handle:
    handle.write(f"trained {args.epochs} epochs: weight {weight:.6f}, loss {(weight - 3) ** 2:.6f}\n")
