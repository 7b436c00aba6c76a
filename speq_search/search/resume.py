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


def study_trials(run_dir: Path, spec: SearchSpec, study_name: str | None = None) -> list:
    """The trials of the run's study (or of its study ``study_name``; ``[]`` without one); a corrupt
    study is one line, naming the file."""
    import optuna

    path = run_dir / "study.db"
    if not path.exists():
        return []
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", skip_table_creation=True)
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if (study_name or spec.name) not in names:
            return []
        return optuna.load_study(study_name=study_name or spec.name, storage=storage).get_trials(deepcopy=False)
    except Exception as err:  # noqa: BLE001 - sqlite3/sqlalchemy/optuna raise many kinds for a bad file
        raise ConfigError("study.db", str(path), f"the run's Optuna SQLite study ({type(err).__name__}: the file is "
                          "corrupt or not a study; restore it from a copy. trials.csv and the Ray trial folders keep "
                          "every finished trial, and `speq-search report` reads them)") from None


def latest_folders_any(experiments: list[Path]) -> list[schema.TrialFolder]:
    """Every Ray trial folder of ``experiments`` (oldest first)."""
    return [schema.read_trial_folder(path) for e in experiments if Path(e).is_dir() for path in schema.trial_folders(e)]


def latest_folders(experiments: list[Path], study_name: str | None = None) -> dict[int, schema.TrialFolder]:
    """The newest Ray trial folder of each Optuna trial number of the study ``study_name`` (None: the
    run's own), over the run's experiments (oldest first)."""
    found: dict[int, schema.TrialFolder] = {}
    for folder in latest_folders_any(experiments):
        number = folder.params.get(schema.TRIAL_KEY)
        if isinstance(number, int) and folder.params.get(schema.STUDY_KEY) == study_name:
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


def carried_trials(run_dir: Path, spec: SearchSpec, experiments: list[Path],
                   study_name: str | None = None) -> tuple[list[Carried], int]:
    """The trials a resumed search runs again, and how many trials the study has asked so far.

    Carried: every trial the study holds as running, and every trial it holds as complete whose
    newest Ray folder does not hold its final result. Runs made before trials named their Optuna
    trial (no :data:`~speq_search.schema.TRIAL_KEY` in their folders) trust the study for finished
    trials and start their unfinished ones over.
    """
    import optuna

    trials = study_trials(run_dir, spec, study_name)
    folders = latest_folders(experiments, None if study_name in (None, spec.name) else study_name)
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
