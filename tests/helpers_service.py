"""What the service-level tests share beyond conftest: a token and a pipeline that prints metric lines."""
from __future__ import annotations

TOKEN = "test-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# argv: epochs, seconds to pause before each epoch.
METRIC_SCRIPT = """\
import sys, time
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
print("loading data", flush=True)
for epoch in range(1, epochs + 1):
    time.sleep(pause)
    loss = 1.0 / epoch
    print(f"epoch={epoch}/{epochs} train_loss={loss:.3f} val_loss={loss + 0.1:.3f} val_accuracy={1 - loss / 2:.3f}",
          flush=True)
print("done", flush=True)
"""
