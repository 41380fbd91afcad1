"""`kill -9` at random moments across the steps of the tiny pipeline (tests/project.py), then rerun.

Injected: ``content-moderation run`` is started in its own session and its whole process group gets
SIGKILL at a seeded random moment: a step is drawn (spread over the eleven), then a delay within that
step's measured duration after the step starts (the flow logs ``<step>: <state>`` as each one ends, so
a step starts when the one before it is reported). Nothing gets to clean up. The next run is the rerun;
it may be killed in turn. A drill *episode* is one pipeline's worth of work: it starts from params
that make every step stale (the first build of the copy, then new seeds for every step) and ends
with a run that is not killed.

Checked after every kill:

- no partial file: no file under data/, models/ or reports/ that is neither the repository's own nor
  inside an output dvc.yaml declares, and every JSON / JSONL output of a stale stage parses to its
  last line. The temporaries of the writes the kill cut short (``.<name>.<pid>.XXXXXXXX[.tmp]`` beside
  their target, ``components/core/contract.py``; in data/, models/, reports/ or the root, e.g. dvc.lock's)
  are listed: nothing could remove them then, and each must be gone by the end of the episode (the
  rerun's write of the same path removes a dead writer's temporaries);
- ``dvc status`` lists no step the killed run reported finished (what it lists was not finished);
- the registry (the copy's SQLite MLflow store): no run with two versions, and ``champion``, if any,
  names a version whose run passed the gate and that the gate promoted (tags written before the
  alias moves); with floors the tiny model fails, ``champion`` never exists.

Checked on every rerun: it resumes: a step finished before a kill ends ``Cached``, every other step
it reaches runs (``Completed``). At the end of each episode: the run exits 0, ``dvc status`` is
clean, no temporary is left, the data steps' outputs in dvc.lock have the hashes of an uninterrupted
run with the same params, the episode left exactly one active MLflow run (finished) and one model
version, its lineage version the next in line (an attempt the kill cut short before its version is
deleted by the rerun: MLflow keeps it as a deleted run, of the same lineage version),
``reports/registry.json`` names them, and ``champion`` moved exactly once where the gate passed and
never where it failed.

Full form: 20 kills over 4 episodes (the first with the tiny floors: the gate fails; then floors at
zero: the gate passes unless the new model regresses against the champion), step durations measured
by an uninterrupted run. Light form (``make test``): 3 kills in one episode with floors at zero (one
in a data step, one in train/export/evaluate/benchmark-env, one in register), moments drawn
within the durations in :data:`NOMINAL_S`.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from flows.dvc_state import stage_names
from tests.drills import pipeline_runs
from tests.project import BIN, clean_env, make_project, project_files, set_params, sh

CLI = str(BIN / "content-moderation")
MODEL = "content-moderation"
SEED = 9
# every floor at zero and a little real text judged: the tiny model passes (as in tests/flows/test_train_flow.py)
PASS_GATE = {"evaluate.f1_floor": 0.0, "evaluate.real_roc_auc_floor": 0.0, "evaluate.behaviour_floor": 0.0,
             "evaluate.real_min_support": 2}
SEEDED = ("generate.seed", "perturb.seed", "ingest.seed", "merge.seed", "train.seed")
DATA_STEPS = ("generate-positives", "generate-negatives", "generate-perturbations", "ingest-external", "merge")
MODEL_STEPS = ("train", "export", "evaluate", "benchmark-env")
# An uninterrupted tiny run on the 2-core machine (2026-12-01, seconds per step): the light form draws its
# moments within these; the full form measures its own.
NOMINAL_S = {"generate-positives": 4.3, "generate-negatives": 2.4, "generate-perturbations": 0.5,
             "ingest-external": 3.8, "merge": 2.0, "train": 39.2, "export": 16.9, "evaluate": 33.1,
             "benchmark-env": 4.7, "register": 4.3, "report": 1.9}
STEP_LINE = re.compile(r"prefect\.flow_runs: (?P<step>[a-z][a-z-]*): (?P<state>[A-Za-z]+) \((?P<s>[0-9.]+) s\)")
BEGIN_LINE = "Beginning flow run"
# contract.atomic_write: mkstemp(prefix=".<name>.", suffix=".tmp"); atomic_folder: mkdtemp(prefix=".<name>.")
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(\.tmp)?$|\.tmp$|\.part$|\.partial$")
WATCHED = ("data", "models", "reports")
CACHES = ("models/.embedding-cache", "data/.llm-cache")
RUN_TIMEOUT_S = 900


class Run:
    """One ``content-moderation run`` in its own session; its output read line by line as it comes."""

    def __init__(self, repo: Path, log: Path):
        self.log = log
        self.t0 = time.monotonic()
        env = {**clean_env(repo), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([CLI, "run"], cwd=repo, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.killed_at: float | None = None

    def _read(self) -> None:
        with open(self.log, "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                with self.cond:
                    self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, wanted, timeout: float = RUN_TIMEOUT_S) -> float | None:
        """Seconds from start at which a line with ``wanted(line)`` came; None if the run ended first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for t, line in self.lines[seen:]:
                    if wanted(line):
                        return t
                seen = len(self.lines)
                if not self.reader.is_alive() or time.monotonic() > deadline:
                    return None
                self.cond.wait(0.5)

    def kill_at(self, moment: float) -> bool:
        """SIGKILL the whole process group ``moment`` s after start; False if the run ended before."""
        while (left := self.t0 + moment - time.monotonic()) > 0:
            if self.proc.poll() is not None:
                return False
            time.sleep(min(left, 0.05))
        if self.proc.poll() is not None:
            return False
        self.killed_at = time.monotonic() - self.t0
        os.killpg(self.proc.pid, signal.SIGKILL)
        return True

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self.reader.join(timeout=30)
        return rc

    def steps(self) -> dict[str, str]:
        """``{step: state}`` of the steps the run reported finished, in order."""
        return {m["step"]: m["state"] for _, line in self.lines if (m := STEP_LINE.search(line))}

    def seconds(self) -> dict[str, float]:
        return {m["step"]: float(m["s"]) for _, line in self.lines if (m := STEP_LINE.search(line))}

    def running(self, order: list[str]) -> str:
        """The step running when the run died: the one after the last reported, or the phase around them."""
        if not any(BEGIN_LINE in line for _, line in self.lines):
            return "(start-up: no step yet)"
        done = self.steps()
        left = [s for s in order if s not in done]
        return left[0] if left else "(after the last step)"

    def tail(self, n: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


# ------------------------------------------------------------------------------------------------
# what is on disk


def temp_files(repo: Path) -> list[str]:
    """Names the atomic writes use for their temporary files and folders, wherever they are left."""
    found = [p.name for p in repo.iterdir() if TEMP_NAME.search(p.name)]
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(repo / top):
            for name in dirnames + filenames:
                if TEMP_NAME.search(name):
                    found.append(str((Path(dirpath) / name).relative_to(repo)))
    return sorted(found)


def declared_outputs(repo: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return sorted(str(Path(out.fs_path).relative_to(repo)) for stage in dvc.index.stages for out in stage.outs)


def stray_files(repo: Path, own: set[str], outs: list[str]) -> list[str]:
    """Files under data/, models/, reports/ that are neither the repository's nor inside a declared output."""
    stray = []
    for top in WATCHED:
        for path in (repo / top).rglob("*"):
            rel = str(path.relative_to(repo))
            if not path.is_file() or rel in own or any(rel == c or rel.startswith(c + "/") for c in CACHES):
                continue
            if not any(rel == o or rel.startswith(o + "/") for o in outs):
                stray.append(rel)
    return sorted(stray)


def unreadable(repo: Path, stale: set[str]) -> list[str]:
    """JSON / JSONL outputs of stale stages that do not parse to their last line (a write cut short)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text()) if (repo / "dvc.lock").exists() else {}
    bad = []
    for stage, entry in ((lock or {}).get("stages") or {}).items():
        if stage not in stale:
            continue
        for out in entry.get("outs") or []:
            path = repo / out["path"]
            files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
            for f in files:
                try:
                    if f.suffix == ".json":
                        json.loads(f.read_text("utf-8"))
                    elif f.suffix == ".jsonl":
                        text = f.read_text("utf-8")
                        if text and not text.endswith("\n"):
                            raise ValueError("no newline at the end")
                        for line in text.splitlines():
                            json.loads(line)
                except (ValueError, UnicodeDecodeError) as exc:
                    bad.append(f"{f.relative_to(repo)}: {str(exc)[:80]}")
    return bad


def dvc_stale(repo: Path) -> dict[str, list]:
    """``dvc status --json``: the stages whose recorded dependencies or outputs differ from the disk."""
    out = sh(repo, str(BIN / "dvc"), "status", "--json")
    start = out.index("{")
    return json.loads(out[start: out.rindex("}") + 1])


def lock_hashes(repo: Path, stages) -> dict[str, str]:
    """dvc.lock's hashes of the stages' data outputs (their statistics under reports/ carry timings)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o.get("md5") or o.get("hash") for s in stages for o in lock.get(s, {}).get("outs", [])
            if o["path"].startswith("data/")}


# ------------------------------------------------------------------------------------------------
# the registry


def registry_state(repo: Path) -> dict:
    """Versions, champion and pipeline runs of the copy's SQLite store (empty before the first register)."""
    if not (repo / "mlflow.db").exists():
        return {"versions": [], "champion": None, "runs": []}
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        versions = list(client.search_model_versions(f"name = '{MODEL}'"))
    except MlflowException:
        versions = []
    try:
        champ = client.get_model_version_by_alias(MODEL, "champion")
    except MlflowException:
        champ = None
    runs = pipeline_runs(client, MODEL)
    state = {"versions": sorted(({"version": str(v.version), "run_id": v.run_id,
                                  "decision": (v.tags or {}).get("gate.decision"),
                                  "promoted_by": (v.tags or {}).get("promoted_by")} for v in versions),
                                key=lambda v: int(v["version"])),
             "champion": None if champ is None else str(champ.version), "runs": runs}
    return state


def registry_problems(state: dict, gate_can_pass: bool) -> list[str]:
    problems = []
    twice = [rid for rid, n in Counter(v["run_id"] for v in state["versions"]).items() if n > 1]
    if twice:
        problems.append(f"runs registered twice: {twice}")
    champ = state["champion"]
    if champ is not None:
        if not gate_can_pass:
            problems.append(f"champion is version {champ} although the gate fails with these floors")
        (mv,) = [v for v in state["versions"] if v["version"] == champ]
        run = next((r for r in state["runs"] if r["run_id"] == mv["run_id"]), None)
        if mv["decision"] != "promoted" or mv["promoted_by"] != "quality-gate":
            problems.append(f"champion version {champ} lacks the gate's promotion tags ({mv})")
        if run is None or run["gate"] != "passed":
            problems.append(f"champion version {champ}'s run did not pass the gate ({run})")
    return problems


# ------------------------------------------------------------------------------------------------
# the drill


def _schedule(rng: random.Random, light: bool, order: list[str]) -> list[list[str]]:
    """The target step of each kill, grouped by episode, in pipeline order within an episode."""
    if light:
        return [[rng.choice(DATA_STEPS), rng.choice(MODEL_STEPS), "register"]]
    targets = rng.sample(order, len(order)) + rng.sample(order, len(order))  # every step twice, 22
    targets = targets[:20]
    episodes = [targets[i:i + 5] for i in range(0, 20, 5)]
    return [sorted(ep, key=order.index) for ep in episodes]


def _episode_params(light: bool, index: int) -> dict:
    """The first episode builds the copy (light: floors at zero; full: the tiny floors, the gate fails);
    each later one has floors at zero and new seeds for every step, so every step is stale again."""
    if index == 0:
        return dict(PASS_GATE) if light else {}
    return {**PASS_GATE, **{key: 13 + index for key in SEEDED}}


def _reference(ref: Path, params: dict, whole: bool, logs: Path, tag: str) -> dict:
    """An uninterrupted run of the same params in another copy: its data hashes, and with ``whole`` the
    whole pipeline and each step's seconds (else only up to merge)."""
    set_params(ref, **params)
    t0 = time.monotonic()
    if not whole:
        (logs / f"reference-{tag}.log").write_text(sh(ref, CLI, "run", "--to", "merge"))
        return {"data": lock_hashes(ref, DATA_STEPS), "seconds": round(time.monotonic() - t0, 1)}
    r = Run(ref, logs / f"reference-{tag}.log")
    rc = r.finish()
    assert rc == 0, f"the uninterrupted reference run failed ({rc}):\n{r.tail()}"
    return {"data": lock_hashes(ref, DATA_STEPS), "steps": r.seconds(), "seconds": round(time.monotonic() - t0, 1)}


def run(workdir: Path, light: bool, seed: int = SEED) -> dict:
    workdir = Path(workdir)
    rng = random.Random(seed)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    repo = make_project(workdir / "project")
    ref = make_project(workdir / "reference")
    order = stage_names(repo)
    own = set(project_files())
    outs = declared_outputs(repo)
    schedule = _schedule(rng, light, order)

    durations = dict(NOMINAL_S)
    clean = None
    kills: list[dict] = []
    episodes: list[dict] = []
    lost: list[str] = []
    champion_moves = 0
    prev_state = registry_state(repo)
    pending = [t for ep in schedule for t in ep]
    ep_index = 0
    n_runs = 0
    while pending or ep_index < len(schedule):
        params = _episode_params(light, ep_index)
        gate_can_pass = bool(params.get("evaluate.f1_floor") == 0.0)
        if ep_index > 0 or params:
            set_params(repo, **params)
        whole = (not light) and ep_index == 0
        reference = _reference(ref, params, whole, logs, f"episode{ep_index + 1}")
        if whole:
            clean = reference
            durations = {s: max(0.2, reference["steps"][s]) for s in order}
        targets = sorted(pending[:len(schedule[ep_index])] if ep_index < len(schedule) else pending,
                         key=order.index)
        pending = pending[len(targets):]
        finished: set[str] = set()
        before = registry_state(repo)
        ep_kills = []
        ep_moves = 0
        carry: list[str] = []
        last_steps: dict[str, str] = {}
        while True:
            n_runs += 1
            r = Run(repo, logs / f"run{n_runs:02d}.log")
            target = targets.pop(0) if targets else None
            landed = False
            if target is not None:
                i = order.index(target)
                trigger = r.wait_line(lambda line, prev=order[i - 1] if i else None: (
                    BEGIN_LINE in line if prev is None else bool((m := STEP_LINE.search(line)) and m["step"] == prev)))
                offset = round(rng.uniform(0.05, 0.9) * durations[target], 2)
                if trigger is not None:
                    landed = r.kill_at(trigger + offset)
            rc = r.finish()
            steps = r.steps()
            # the rerun resumes: what finished before ends Cached, every other step it reached runs
            wrong = {s: st for s, st in steps.items() if (st == "Cached") != (s in finished)}
            if wrong:
                lost.append(f"run {n_runs} did not resume from what was finished ({sorted(finished)}): {wrong}")
            if kills and kills[-1]["rerun"] is None:
                kills[-1]["rerun"] = {"redid": [s for s, st in steps.items() if st != "Cached"],
                                      "cached": [s for s, st in steps.items() if st == "Cached"],
                                      "resumed": not wrong}
            if not landed:
                if target is not None:
                    carry.append(target)  # the run ended before its moment: the kill goes to the next episode
                last_steps = steps
                if rc != 0:
                    lost.append(f"the run after the kills failed ({rc}):\n{r.tail()}")
                break
            stale = dvc_stale(repo)
            temporaries = temp_files(repo)
            strays = [s for s in stray_files(repo, own, outs)
                      if not any(s == t or s.startswith(t + "/") for t in temporaries)]  # a temporary folder's files
            broken = unreadable(repo, set(stale))
            state = registry_state(repo)
            reported = {s for s in steps}
            not_finished_listed = sorted(set(stale) & reported)
            running = r.running(order)
            finished |= reported
            if running in order and running not in stale:
                finished.add(running)  # committed before the kill, not yet reported
            problems = registry_problems(state, gate_can_pass)
            kill = {"episode": ep_index + 1, "target": target, "moment_s": round(r.killed_at, 2),
                    "offset_in_step_s": offset, "step": running, "temporaries_at_the_kill": temporaries,
                    "leftovers": None, "stray_files": strays,
                    "unreadable": broken, "dvc_status_stale": sorted(stale),
                    "stale_but_reported_finished": not_finished_listed,
                    "registry": {"versions": len(state["versions"]), "champion": state["champion"],
                                 "runs": len(state["runs"]),
                                 "runs_unfinished": sum(1 for x in state["runs"] if x["status"] != "FINISHED")},
                    "registry_problems": problems, "rerun": None}
            kills.append(kill)
            ep_kills.append(kill)
            if strays:
                lost.append(f"kill {len(kills)} ({running}) left files that are no output: {strays}")
            if broken:
                lost.append(f"kill {len(kills)} ({running}) left unreadable outputs {broken}")
            if not_finished_listed:
                lost.append(f"kill {len(kills)}: dvc status lists finished steps {not_finished_listed}")
            lost.extend(f"kill {len(kills)}: {p}" for p in problems)
            if state["champion"] != prev_state["champion"]:
                champion_moves += 1
                ep_moves += 1
            prev_state = state
        # the episode's end: the same outputs as the uninterrupted run, everything current, recorded once;
        # a kill's temporaries (it could not clean up) are gone: the rerun's writes of the same paths removed them
        pending = carry + pending
        left_now = set(temp_files(repo))
        for kill in ep_kills:
            kill["leftovers"] = sorted(set(kill["temporaries_at_the_kill"]) & left_now)
            if kill["leftovers"]:
                lost.append(f"kill {kills.index(kill) + 1} ({kill['step']}) left {kill['leftovers']}, still there "
                            "after the reruns")
        stale = dvc_stale(repo)
        state = registry_state(repo)
        registry = json.loads((repo / "reports/registry.json").read_text())
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        new_versions = [v for v in state["versions"] if v not in before["versions"]]
        new_runs = [x for x in state["runs"] if x["run_id"] not in {y["run_id"] for y in before["runs"]}]
        if state["champion"] != prev_state["champion"]:
            champion_moves += 1
            ep_moves += 1
        data_now = lock_hashes(repo, DATA_STEPS)
        expected_lineage = f"v{17 + ep_index}"
        gate_passed = bool(metrics["gate"]["passed"])
        checks = {
            "completed": rc == 0 and len(last_steps) == len(order),
            "dvc_status_clean": stale == {},
            "data_as_uninterrupted": data_now == reference["data"],
            "no_leftovers": not left_now and not stray_files(repo, own, outs),
            "deleted_attempts_only_of_this_registration": all(
                x["lineage"] == registry["lineage_version"] for x in new_runs if x["stage"] == "deleted"),
            # an attempt cut short before its version is deleted by the rerun (MLflow keeps it as a deleted run)
            "one_run_recorded": [x["status"] for x in new_runs if x["stage"] == "active"] == ["FINISHED"],
            "one_version_registered": len(new_versions) == 1,
            "registry_json_names_it": bool(new_versions) and registry["version"] == new_versions[-1]["version"]
                                      and registry["run_id"] == new_versions[-1]["run_id"],
            "lineage_next_in_line": registry["lineage_version"] == expected_lineage,
            "champion_moved_iff_gate_passed": ep_moves == (1 if gate_passed else 0)
                                              and registry["promoted"] == gate_passed
                                              and (not gate_passed or state["champion"] == registry["version"]),
            "registry_invariants": not registry_problems(state, gate_can_pass),
        }
        for name, ok in checks.items():
            if not ok:
                lost.append(f"episode {ep_index + 1}: {name} failed")
        episodes.append({"episode": ep_index + 1, "params": params, "kills": len(ep_kills), "runs_to_finish": len(ep_kills) + 1,
                         "gate_passed": gate_passed, "champion": state["champion"], "champion_moves": ep_moves,
                         "new_versions": [v["version"] for v in new_versions],
                         "new_runs": [{"lineage": x["lineage"], "status": x["status"], "stage": x["stage"]} for x in new_runs],
                         "lineage_version": registry["lineage_version"], "checks": checks,
                         "reference_s": reference["seconds"]})
        prev_state = state
        ep_index += 1
        if ep_index >= len(schedule) and not pending:
            break
        if ep_index >= len(schedule) + 2:
            lost.append(f"{len(pending)} kills never landed: {pending}")
            break

    passed = not lost and len(kills) == (3 if light else 20)
    summary = (f"{len(kills)} kills ({Counter(k['step'] for k in kills).most_common()}) over {len(episodes)} "
               f"episodes; every rerun resumed: {all(k['rerun'] and k['rerun']['resumed'] for k in kills)}; "
               f"temporaries left by the kills: {sum(len(k['temporaries_at_the_kill']) for k in kills)}, still there "
               f"after the reruns: {sum(len(k['leftovers'] or []) for k in kills)}; partial or stray files: "
               f"{sum(len(k['stray_files']) + len(k['unreadable']) for k in kills)}; champion moved {champion_moves} time(s)")
    return {
        "injected": f"SIGKILL to the process group of `content-moderation run` at {len(kills)} seeded random moments "
                    f"(seed {seed}) across the steps of the tiny pipeline, each followed by a rerun",
        "happened": summary,
        "lost": "nothing" if not lost else "; ".join(lost),
        "passed": passed,
        "kills": kills,
        "episodes": episodes,
        "champion_moves": champion_moves,
        "clean_run": clean,
        "step_seconds_used": durations,
        "runs": n_runs,
    }
