"""Each registered version as an MLflow pyfunc model: the release folder behind the one scoring path.

A logged model holds ``MLmodel``, ``artifacts/release/`` (the release folder, as the evaluate step
wrote it), ``code/components/`` (this package, so loading needs no project checkout) and the pinned
pip requirements, so both of these work with nothing else::

    mlflow.pyfunc.load_model("models:/content-moderation@champion").predict(df)
    mlflow models serve -m models:/content-moderation@champion --env-manager local

:class:`ModerationModel` loads the folder with :class:`~components.model.onnx_runtime.OnnxClassifier`
and answers with :func:`components.serving.moderate.moderate`; it scores, flags and decides nothing
itself.

Input: a DataFrame with ``text`` (required), ``audience`` and ``surface`` (optional, per row), or
a list of strings. A row with neither ``audience`` nor ``surface`` is placed by the text's own
``[AUDIENCE][SURFACE]`` prefix, else GENERAL/GENERAL (:func:`components.core.taxonomy.place`); a row
with one of them gets GENERAL for the other.

Output: a DataFrame, one row per text, in order: ``action`` (the policy's recommended action),
``flags`` (the flagged category names, most severe first), ``scores`` (``{category: score}`` for all
18 categories, rounded to 6 decimals as in :meth:`~components.serving.moderate.Result.to_dict`: one
JSON object per row from ``mlflow models serve``), ``language`` (ISO 639-1 code; ``zxx`` for no
linguistic content) and ``judged`` (whether the model judged the text's language; a text it does not
judge gets no flags).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from components.core.taxonomy import ContextPrefix
from components.model.folder import THRESHOLDS_NAME, ModelFolderError

RELEASE_ARTIFACT = "release"  # context.artifacts key, and the folder under the model's artifacts/
OUTPUT_COLUMNS = ("action", "flags", "scores", "language", "judged")
CONTEXT_COLUMNS = ("audience", "surface")
# What loading and predicting imports, pinned at the versions installed here (pyproject.toml's pins):
# naming them avoids MLflow's requirement inference, which loads the model again (seconds).
REQUIREMENTS = ("mlflow", "cloudpickle", "onnxruntime", "tokenizers", "numpy", "pandas", "pyyaml",
                "lingua-language-detector", "confusable-homoglyphs", "wordsegment")
INPUT_EXAMPLE = [
    {"text": "I know where you live and I will hurt you tonight", "audience": "GENERAL", "surface": "MESSAGE"},
    {"text": "Lovely weather for the picnic, see you at noon", "audience": "ADULT", "surface": "BIO"},
    {"text": "[GENERAL][LISTING] Selling my old bike, barely used", "audience": None, "surface": None},
]


class ModerationModel(mlflow.pyfunc.PythonModel):
    """The release folder (``context.artifacts["release"]``) answering through :func:`moderate`."""

    def load_context(self, context) -> None:
        from components.model.onnx_runtime import OnnxClassifier

        self.model = OnnxClassifier(context.artifacts[RELEASE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """``model_input``: a DataFrame (``text``; optional ``audience``, ``surface``) or a list of
        strings. Returns a DataFrame of ``OUTPUT_COLUMNS``, one row per text (see the module doc)."""
        return predict_frame(self.model, model_input)


def predict_frame(model, model_input):
    """What :meth:`ModerationModel.predict` returns for ``model_input``, from ``model`` (an OnnxClassifier)."""
    from mlflow.exceptions import MlflowException

    from components.serving.moderate import moderate

    texts, contexts = _texts_and_contexts(model_input)
    try:
        results = moderate(model, texts, contexts)
    except ValueError as exc:  # a malformed [AUDIENCE][SURFACE] prefix in a text: the caller's to fix
        raise MlflowException.invalid_parameter_value(str(exc)) from None
    rows = []
    for result in results:
        d = result.to_dict(include_text=False)
        rows.append({"action": d["action"], "flags": [f["category"] for f in d["flags"]], "scores": d["scores"],
                     "language": d["language"]["code"], "judged": d["language"]["judged"]})
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str)
                                                                                 and not value.strip())


def _texts_and_contexts(model_input) -> tuple[list[str], list[ContextPrefix | None]]:
    """The texts and one context (or None: the text's own prefix) per text; MlflowException
    INVALID_PARAMETER_VALUE (HTTP 400 from ``mlflow models serve``) for input it cannot read."""
    import numpy as np
    from mlflow.exceptions import MlflowException

    bad = MlflowException.invalid_parameter_value
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if isinstance(model_input, (list, tuple, np.ndarray, pd.Series)):
        model_input = pd.DataFrame({"text": list(model_input)})
    if not isinstance(model_input, pd.DataFrame):
        raise bad(f"expected a DataFrame with a 'text' column or a list of strings, got {type(model_input).__name__}")
    if "text" not in model_input.columns:
        raise bad(f"the input needs a 'text' column (optional: audience, surface); got columns "
                  f"{', '.join(map(str, model_input.columns)) or 'none'}")
    texts = model_input["text"].tolist()
    if wrong := [i for i, t in enumerate(texts) if not isinstance(t, str)]:
        raise bad(f"'text' must be a string in every row; rows {wrong[:10]} are not")
    columns = [model_input[c].tolist() if c in model_input.columns else [None] * len(texts) for c in CONTEXT_COLUMNS]
    contexts: list[ContextPrefix | None] = []
    for i, (audience, surface) in enumerate(zip(*columns)):
        if _missing(audience) and _missing(surface):
            contexts.append(None)
            continue
        try:
            contexts.append(ContextPrefix("GENERAL" if _missing(audience) else str(audience).strip().upper(),
                                          "GENERAL" if _missing(surface) else str(surface).strip().upper()))
        except ValueError as exc:
            raise bad(f"row {i}: {exc}") from None
    return texts, contexts


def pip_requirements() -> list[str]:
    """The model's pip requirements: :data:`REQUIREMENTS` at the versions installed here."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def signature_and_example(release_dir: str | os.PathLike):
    """(signature, input example): the example's rows moderated by the folder itself, so a folder
    that cannot be loaded fails here with the runtime's own message, before anything is logged."""
    from mlflow.models import infer_signature

    from components.model.onnx_runtime import OnnxClassifier

    example = pd.DataFrame(INPUT_EXAMPLE)
    output = predict_frame(OnnxClassifier(release_dir), example)
    return infer_signature(example, output), example


def log_release_model(release_dir: str | os.PathLike, name: str = "model"):
    """Log ``release_dir`` as a :class:`ModerationModel` in the active MLflow run; returns the
    ``ModelInfo`` (``model_id``, ``model_uri`` ``models:/m-...``).

    The caller chooses the store and the run (``mlflow.start_run(run_id=...)``); see
    :func:`components.tracking.runs.log_pipeline_run`. Raises ModelFolderError (a CheckpointError)
    for a folder that is not a release folder or cannot be loaded, before anything is logged.
    """
    import components

    release_dir = Path(release_dir)
    if not (release_dir / THRESHOLDS_NAME).is_file():
        raise ModelFolderError(f"{release_dir}: no {THRESHOLDS_NAME}; not a release folder (run the evaluate step)")
    signature, example = signature_and_example(release_dir)
    with tempfile.TemporaryDirectory(prefix="release-") as staging:
        if release_dir.name != RELEASE_ARTIFACT:  # MLflow names the copy after the folder: always release/
            release_dir = Path(shutil.copytree(release_dir, Path(staging) / RELEASE_ARTIFACT))
        # The package's sources only: bytecode is interpreter-specific, and a .pyc another process is
        # writing beside them (a temporary file renamed into place) would vanish under MLflow's copy.
        code = shutil.copytree(Path(components.__file__).parent, Path(staging) / "code" / "components",
                               ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=ModerationModel(),
            artifacts={RELEASE_ARTIFACT: str(release_dir)},
            code_paths=[str(code)],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
