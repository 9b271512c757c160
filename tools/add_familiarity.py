"""Give an existing router file the familiarity data of its training set, leaving its models untouched.

    python tools/add_familiarity.py classifier/model/router.skops ../shared/data/routing/dev.jsonl

`classifier train` computes familiarity itself (`classifier.fit.fit_familiarity`); this adds it to a model
trained before that existed, from the same data files it was trained on (the model's `trained_on` names them).
The file is rewritten with the same info header; its scores do not change (checked on the data's prompts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifier.data import concat, load_dataset  # noqa: E402
from classifier.fit import fit_familiarity  # noqa: E402
from classifier.model import RouterModel, load_model, save_model  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, data_paths = Path(argv[0]), argv[1:]
    model = load_model(path)
    names = " + ".join(Path(p).name for p in data_paths)
    trained = (model.metadata.get("trained_on") or {}).get("path_name")
    if trained != names:
        print(f"error: {path} was trained on {trained!r}, not {names!r}", file=sys.stderr)
        return 2
    data = concat([load_dataset(p) for p in data_paths])
    familiarity = fit_familiarity(model.featurizer.transform(data.prompts), model.featurizer)
    new = RouterModel(model.featurizer, model.models, priors=model.priors, trees=model.trees,
                      familiarity=familiarity)
    before, after = model.score_many(data.prompts), new.score_many(data.prompts)
    if not np.array_equal(before, after):
        print("error: scores changed; nothing written", file=sys.stderr)
        return 1
    import skops.io as sio  # the file's own info header, kept as it is (load_model checked its types)

    info = json.loads(sio.load(path, trusted=sio.get_untrusted_types(file=path))["info"] or "{}")
    save_model(new, path, info)
    fam = [round(new.familiarity(p) or 0.0, 4) for p in data.prompts[:3]]
    print(f"wrote {path}: familiarity over {familiarity.rows if familiarity else 0} training prompts "
          f"(first three training prompts: {fam}); scores unchanged on {len(data.prompts)} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
