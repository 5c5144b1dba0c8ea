"""The partner's prediction page and JSON API: SMILES in, probabilities, conformal sets, structures and reasons out.

It serves one partner's private model on the partner's own network (default 127.0.0.1); nothing is sent anywhere
else and the page loads nothing from outside (no CDN: its script is inline). Every molecule is size-checked by the
predictor before RDKit reads it, and only standardized (hence size-checked) structures are drawn.

Routes: `GET /` form; `POST /` result table; `POST /predict.csv` the same table as CSV (what the CLI writes);
`GET /molecule?smiles=…` one molecule's detail view (atom-contribution maps, nearest measured neighbours);
`POST /api/predict` and `POST /api/molecule` the same as JSON (see docs/prediction.md).
"""

from __future__ import annotations

import gc
import io
import urllib.parse
from functools import lru_cache
from typing import Any

import pandas as pd
from flask import Flask, Response, jsonify, render_template, request
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from data_prep.errors import InputError
from partner_kit.predict import (
    MAX_MOLECULES,
    Molecules,
    Prediction,
    Predictor,
    molecules_from_frame,
    molecules_from_sdf,
    parse_smiles_lines,
)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_API_BYTES = 2 * 1024 * 1024
MAX_API_MOLECULES = 10_000
PAGE_LIMIT = 500  # molecules drawn on the page; the CSV holds all


@lru_cache(maxsize=4096)
def molecule_svg(smiles: str, size: int = 150) -> str:
    """A (standardized, size-checked) structure as inline SVG; empty when RDKit cannot read it."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return ""
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText().replace("<?xml version='1.0' encoding='iso-8859-1'?>", "")


def parse_upload(name: str, payload: bytes) -> Molecules:
    """An uploaded .csv/.tsv (with a `smiles` column), .sdf, or .smi/.txt (SMILES [name] per line)."""
    lower = name.lower()
    if lower.endswith((".csv", ".tsv")):
        try:
            frame = pd.read_csv(io.BytesIO(payload), dtype=str, sep="\t" if lower.endswith(".tsv") else ",")
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"{name} cannot be read as a table: {str(exc).strip()}") from None
        molecules = molecules_from_frame(frame, name)
    else:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name} is not a text file; upload a .smi, .txt, .sdf or .csv file") from None
        molecules = molecules_from_sdf(text, name) if lower.endswith(".sdf") else parse_smiles_lines(text)
    if not molecules.smiles:
        raise InputError(f"{name} holds no molecules")
    return molecules


def task_rows_html(detail: dict[str, Any]) -> Markup:
    """The detail view's prediction rows, one per task, built here: Jinja's per-cell lookups cost ~150 ms for
    2,000 tasks, this ~10 ms."""
    query = urllib.parse.quote(detail["smiles"], safe="")
    drawn = set(detail["map_positions"])

    def number(value: Any, spec: str) -> str:
        return "" if value is None else format(value, spec)

    rows = []
    for t in detail["tasks"]:
        j, label = t["position"], escape(t["task"])
        if t.get("set"):
            call = f'<span class="set set-{t["set"]}">{t["set"]}</span>'
        elif t.get("low") is not None:
            call = f'[{number(t["low"], ".2f")}, {number(t.get("high"), ".2f")}]'
        else:
            call = "–"
        link = (f'<a href="#map-{j}">map</a>' if j in drawn else
                f'<a href="molecule?smiles={query}&amp;task={j}#map-{j}">show map</a>')
        rows.append(f'<tr data-task="{label}"><td>{label}</td><td class="num prediction">'
                    f'{number(t["prediction"], ".4f") or "–"}</td><td>{call}</td>'
                    f'<td class="num">{number(t.get("p(active)"), "g")}</td>'
                    f'<td class="num">{number(t.get("p(inactive)"), "g")}</td><td>{link}</td></tr>')
    return Markup("\n".join(rows))


def csv_text(result: Prediction) -> str:
    """The CSV the CLI writes for the same molecules."""
    buffer = io.StringIO()
    result.write_csv(buffer)
    return buffer.getvalue()


def api_error(message: str, status: int = 400) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def create_app(predictor: Predictor) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False  # API rows keep the CSV's column order (and 8,000 keys encode faster unsorted)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES

    def page(**context: Any) -> str:
        base = dict(model=predictor.info, result=None, error=None, text="", max_molecules=MAX_MOLECULES,
                    significance=predictor.significance, conformal=predictor.conformal is not None,
                    has_training=predictor.training is not None)
        base.update(context)
        return render_template("predict.html", **base)

    def gather() -> Molecules:
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            return parse_upload(upload.filename, upload.read())
        molecules = parse_smiles_lines(request.form.get("smiles", ""))
        if not molecules.smiles:
            raise InputError("no molecules given: paste SMILES (one per line) or upload a file")
        return molecules

    @app.get("/")
    def index() -> str:
        return page()

    @app.post("/")
    def predict_page() -> tuple[str, int] | str:
        text = request.form.get("smiles", "")
        try:
            result = predictor.predict(gather())
        except InputError as exc:
            return page(error=str(exc), text=text), 400
        rows = result.records(PAGE_LIMIT)
        pictures = [molecule_svg(row["standardized_smiles"]) for row in rows]
        return page(result=result, rows=rows, pictures=pictures, text=text, truncated=len(result) > PAGE_LIMIT,
                    csv=csv_text(result) if len(result) <= PAGE_LIMIT else None)

    @app.post("/predict.csv")
    def predict_csv() -> Response:
        try:
            result = predictor.predict(gather())
        except InputError as exc:
            return Response(f"error: {exc}\n", status=400, mimetype="text/plain")
        return Response(csv_text(result), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=predictions.csv"})

    def detail_of(smiles: str, positions: list[int] | None) -> dict[str, Any]:
        if not smiles.strip():
            raise InputError("no molecule given: pass ?smiles=…")
        return predictor.detail(smiles.strip(), positions)

    @app.get("/molecule")
    def molecule_page() -> tuple[str, int] | str:
        smiles = request.args.get("smiles", "")
        try:
            detail = detail_of(smiles, [])  # contribution maps are separate images (/molecule/map.png)
            task = request.args.get("task")
            if task not in (None, ""):
                detail["map_positions"] = [_task_number(task, len(predictor.labels))]
        except InputError as exc:
            return render_template("molecule.html", detail=None, error=str(exc), model=predictor.info), 400
        pictures = [molecule_svg(n.smiles) for n in detail["neighbours"] or []]
        return render_template("molecule.html", detail=detail, error=None, model=predictor.info,
                               picture=molecule_svg(detail["standardized_smiles"], 260), labels=predictor.labels,
                               neighbour_pictures=pictures, task_rows=task_rows_html(detail))

    @app.get("/molecule/map.png")
    def contribution_map() -> Response:
        try:
            smiles = request.args.get("smiles", "").strip()
            if not smiles:
                raise InputError("no molecule given: pass ?smiles=…&task=N")
            png = contribution_map_png(smiles, _task_number(request.args.get("task", ""), len(predictor.labels)))
        except InputError as exc:
            return Response(f"error: {exc}\n", status=400, mimetype="text/plain")
        return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @lru_cache(maxsize=512)
    def contribution_map_png(smiles: str, position: int) -> bytes:
        from partner_kit.explain import contribution_png

        detail = predictor.detail(smiles, [position])
        if detail["error"]:
            raise InputError(detail["error"])
        return contribution_png(detail["tasks"][position]["contributions"])

    # ---- JSON API -------------------------------------------------------------------------------------------
    def api_body() -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_API_BYTES:
            raise _TooLarge(f"request body of {request.content_length} bytes; the API takes at most "
                            f"{MAX_API_BYTES // 2**20} MB")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InputError('the body must be a JSON object such as {"smiles": ["CCO"]} '
                             "(Content-Type: application/json)")
        return body

    @app.post("/api/predict")
    def api_predict() -> tuple[Response, int] | Response:
        try:
            body = api_body()
            smiles, names = body.get("smiles"), body.get("names")
            if not isinstance(smiles, list) or not smiles or not all(isinstance(s, str) for s in smiles):
                raise InputError('"smiles" must be a non-empty list of strings')
            if len(smiles) > MAX_API_MOLECULES:
                raise InputError(f"{len(smiles)} molecules; the API takes at most {MAX_API_MOLECULES} per request "
                                 "(use `partner-kit predict` for files)")
            if names is not None and (not isinstance(names, list) or len(names) != len(smiles)
                                      or not all(isinstance(n, str) for n in names)):
                raise InputError('"names", when given, must be a list of strings as long as "smiles"')
            result = predictor.predict(Molecules.of(smiles, names))
        except _TooLarge as exc:
            return api_error(str(exc), 413)
        except InputError as exc:
            return api_error(str(exc))
        return jsonify({"significance": predictor.significance, "tasks": predictor.labels,
                        "columns": result.column_names, "rows": result.records()})

    @app.post("/api/molecule")
    def api_molecule() -> tuple[Response, int] | Response:
        try:
            body = api_body()
            smiles, task = body.get("smiles"), body.get("task")
            if not isinstance(smiles, str):
                raise InputError('"smiles" must be one SMILES string')
            if task is not None and not isinstance(task, int):
                raise InputError('"task", when given, must be a task number')
            detail = detail_of(smiles, None if task is None else [_task_number(str(task), len(predictor.labels))])
        except _TooLarge as exc:
            return api_error(str(exc), 413)
        except InputError as exc:
            return api_error(str(exc))
        for entry in detail["tasks"]:
            contrib = entry.pop("contributions")
            entry["atom_contributions"] = None if contrib is None else [round(float(w), 5) for w in contrib.weights]
        detail["neighbours"] = None if detail["neighbours"] is None else [
            {"row": n.row, "similarity": round(n.similarity, 4), "smiles": n.smiles, "compound_ids": n.compound_ids,
             "measurements": {predictor.labels[j]: m for j, m in n.measurements.items()}}
            for n in detail["neighbours"]]
        return jsonify(detail)

    @app.errorhandler(413)
    def too_large(_: Exception) -> tuple[Response | str, int]:
        message = f"request larger than {MAX_UPLOAD_BYTES // 2**20} MB; split the file"
        if request.path.startswith("/api/"):
            return api_error(message, 413)
        return page(error=message), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response | str, int]:
        if request.path.startswith("/api/"):
            return api_error(f"{exc.name}: {exc.description}", exc.code or 400)
        return page(error=f"{exc.name}: {exc.description}"), exc.code or 400

    # One prediction at start-up builds what every request needs (RDKit's standardizer, the column layout), so the
    # first request is not slower. Everything built so far (model, tasks, calibration, Flask, RDKit, torch:
    # ~230,000 tracked objects) lives as long as the server; frozen, the cyclic garbage collector stops re-scanning
    # it: unfrozen, the full collection that every ~20th API request triggers cost ~120 ms of CPU (the API's p95).
    predictor.predict(["CCO"])
    gc.freeze()
    return app


def _task_number(text: str, n_tasks: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise InputError(f"task {text!r} is not a task number") from None
    if not 0 <= number < n_tasks:
        raise InputError(f"task {number} does not exist; this model has tasks 0..{n_tasks - 1}")
    return number


class _TooLarge(InputError):
    """An API request over MAX_API_BYTES (answered 413)."""
