"""What a resumed search runs: read from the run's study (the record of every trial asked) and its
Ray experiments (what each trial saved), never from Ray's pickled state.

A search that stops (Ctrl-C, a crash, ``kill -9``, a lost driver) leaves Optuna trials that were
asked but never told, and perhaps one told just before the crash whose final result Ray had not yet
written. Each is *carried*: the resumed search runs it again as a new Ray trial, from the last
checkpoint of its earlier one where there is one, and tells the study once.
"""

from __future__ import annotations

import json
from pathlib import Path

from speq_search import schema
from speq_search.errors import ConfigError
from speq_search.search.searcher import Carried
from speq_search.space import SearchSpec


def study_trials(run_dir: Path, spec: SearchSpec) -> list:
    """The run study's trials (``[]`` without a study); a corrupt study is one line, naming the file."""
    import optuna

    path = run_dir / "study.db"
    if not path.exists():
        return []
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", skip_table_creation=True)
        return optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False)
    except Exception as err:  # noqa: BLE001 - sqlite3/sqlalchemy/optuna raise many kinds for a bad file
        raise ConfigError("study.db", str(path), f"the run's Optuna SQLite study ({type(err).__name__}: the file is "
                          "corrupt or not a study; restore it from a copy. trials.csv and the Ray trial folders keep "
                          "every finished trial, and `speq-search report` reads them)") from None


def latest_folders(experiments: list[Path]) -> dict[int, schema.TrialFolder]:
    """The newest Ray trial folder of each Optuna trial number, over the run's experiments (oldest first)."""
    found: dict[int, schema.TrialFolder] = {}
    for experiment in experiments:
        if not Path(experiment).is_dir():
            continue
        for path in schema.trial_folders(experiment):
            folder = schema.read_trial_folder(path)
            number = folder.params.get(schema.TRIAL_KEY)
            if isinstance(number, int):
                found[number] = folder
    return found


def last_checkpoint(folder: schema.TrialFolder | None) -> str | None:
    """The newest checkpoint a trial folder holds that a trial can resume from (a folder, or the URI
    of one in object storage for the run folder's copy of a trial), else ``None``."""
    if folder is None:
        return None
    if (folder.path / "remote.json").exists():
        from speq_search.storage import remote_checkpoints

        newest = remote_checkpoints(json.loads((folder.path / "remote.json").read_text())["uri"])
        return newest[0] if newest else None
    for candidate in sorted(folder.path.glob("checkpoint_*"), reverse=True):
        if (candidate / "checkpoint.pt").exists():
            return str(candidate)
    return None


def carried_trials(run_dir: Path, spec: SearchSpec, experiments: list[Path]) -> tuple[list[Carried], int]:
    """The trials a resumed search runs again, and how many trials the study has asked so far.

    Carried: every trial the study holds as running, and every trial it holds as complete whose
    newest Ray folder does not hold its final result. Runs made before trials named their Optuna
    trial (no :data:`~speq_search.schema.TRIAL_KEY` in their folders) trust the study for finished
    trials and start their unfinished ones over.
    """
    import optuna

    trials = study_trials(run_dir, spec)
    folders = latest_folders(experiments)
    carried, asked = [], 0
    for t in trials:
        if t.state == optuna.trial.TrialState.WAITING:  # enqueued (a warm start), never asked
            continue
        asked += 1
        folder = folders.get(t.number)
        unsaved = (t.state == optuna.trial.TrialState.COMPLETE and bool(folders)
                   and (folder is None or folder.status(live=False) not in (schema.COMPLETED, schema.INFEASIBLE)))
        if t.state == optuna.trial.TrialState.RUNNING or unsaved:
            carried.append(Carried(t.number, dict(t.params), last_checkpoint(folder)))
    return carried, asked
