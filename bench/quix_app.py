"""The Quix Streams contender: a StreamingDataFrame that applies the model to each message.

It runs in its own virtual environment (see :func:`bench.contenders.quix_python`): Quix Streams
3.28 pins ``confluent-kafka<2.13`` and ``pydantic<2.14``, older than rayml's. XGBoost, NumPy and
scikit-learn come from rayml's environment, appended to ``sys.path`` (``--extra-site``) *after*
this environment's own packages, so Quix keeps the confluent-kafka it was built against.

Quix's own defaults are kept: at-least-once processing, checkpoints (commit) every 5 s.

Run as ``PYTHON -m bench.quix_app --bootstrap HOST:PORT --input T --output T --group G
--model PATH --extra-site DIR`` (the benchmark starts it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--model", required=True, help="XGBoost model file (.ubj/.json)")
    parser.add_argument("--extra-site", action="append", default=[])
    args = parser.parse_args(argv)
    sys.path.extend(args.extra_site)

    import numpy as np
    from quixstreams import Application
    from xgboost import XGBClassifier

    model = XGBClassifier()
    model.load_model(args.model)
    model.set_params(n_jobs=1)
    classes = model.classes_

    def predict(request: dict[str, Any]) -> dict[str, Any]:
        features = np.asarray([request["params"]["features"]], dtype=np.float64)
        proba = model.predict_proba(features)[0]
        best = int(proba.argmax())
        return {
            "id": request["id"],
            "pipeline": request["pipeline"],
            "status": "ok",
            "result": {"label": int(classes[best]), "probability": float(proba[best])},
        }

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="bench-quix-"),
        loglevel="WARNING",
        use_changelog_topics=False,
    )
    source = app.topic(args.input, value_deserializer="json")
    sink = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(predict)
    sdf.to_topic(sink)
    print("ready", flush=True)
    app.run()  # until SIGTERM: Quix then commits its checkpoint and leaves the group
    return 0


if __name__ == "__main__":
    sys.exit(main())
