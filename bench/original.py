"""The original design, kept only as a benchmark baseline: ``eval`` of a call built from a message.

THIS IS THE THING RAYML REPLACES. It builds a Python call expression from each message and
``eval``-s it, so any producer on the topic could run any code. It lives in ``bench/`` only, to
measure what the original design cost; nothing in ``rayml/`` may do this (the project's hook
greps ``rayml/`` for ``eval``).

One consumer process, one message at a time: poll, build ``predict(model, features=[...])``
from the message, ``eval`` it (one row through the model), produce the result, and commit the
message's offset synchronously. Like the original, it does not wait for the result's delivery
before committing (so it is, if anything, faster and less safe than it should be).

Run as ``python -m bench.original --bootstrap HOST:PORT --input T --output T --group G
--model PATH`` (the benchmark starts it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer


def _load(path: str) -> Any:
    from xgboost import XGBClassifier

    model = XGBClassifier()
    model.load_model(path)
    model.set_params(n_jobs=1)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--model", required=True, help="XGBoost model file (.ubj/.json)")
    args = parser.parse_args(argv)

    model = _load(args.model)

    def breast_cancer_predict(model: Any, features: list[float]) -> dict[str, Any]:
        proba = model.predict_proba(np.asarray([features], dtype=np.float64))[0]
        best = int(proba.argmax())
        return {"label": int(model.classes_[best]), "probability": float(proba[best])}

    # What the expression may name: the pipeline functions and the loaded model.
    namespace: dict[str, Any] = {
        "breast_cancer_predict": breast_cancer_predict,
        "model": model,
    }

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 1})
    consumer.subscribe([args.input])

    running = True

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    while running:
        msg = consumer.poll(0.1)
        if msg is None or msg.error() is not None:
            continue
        request = json.loads(msg.value())
        # The original design: a call expression assembled from message fields, then eval-ed.
        function = request["pipeline"].replace(".", "_")
        kwargs = ", ".join(f"{name}={value!r}" for name, value in request["params"].items())
        expression = f"{function}(model, {kwargs})"
        try:
            output = eval(expression, namespace)  # noqa: S307 -- deliberately the unsafe baseline
            result = {"id": request["id"], "status": "ok", "result": output}
        except Exception as exc:
            result = {
                "id": request["id"],
                "status": "error",
                "error": {"type": type(exc).__name__, "message": str(exc)},
            }
        result["pipeline"] = request["pipeline"]
        producer.produce(args.output, key=msg.key(), value=json.dumps(result).encode())
        producer.poll(0)
        consumer.commit(message=msg, asynchronous=False)
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
