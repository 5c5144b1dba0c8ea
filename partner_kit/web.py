"""The partner's prediction page: paste or upload SMILES, see per-assay probabilities, confidence and structures.

It serves one partner's private model on the partner's own network (default 127.0.0.1); nothing is sent anywhere
else. Results can be downloaded as CSV.
"""

from __future__ import annotations

import io
from functools import lru_cache

import pandas as pd
from flask import Flask, Response, render_template, request
from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D

from data_prep.errors import InputError
from partner_kit.predict import MAX_MOLECULES, Predictor, molecules_from_frame

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
PAGE_LIMIT = 500  # molecules drawn on the page; the CSV holds all


@lru_cache(maxsize=4096)
def molecule_svg(smiles: str, size: int = 150) -> str:
    """The input structure as inline SVG (empty when RDKit cannot parse it)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText().replace("<?xml version='1.0' encoding='iso-8859-1'?>", "")


def parse_text(text: str) -> tuple[list[str], list[str]]:
    """One molecule per line: SMILES, optionally followed by whitespace and a name."""
    parts = [line.split(maxsplit=1) for line in text.splitlines() if line.strip()]
    return [p[0] for p in parts], [p[1].strip() if len(p) > 1 else "" for p in parts]


def parse_upload(name: str, payload: bytes) -> tuple[list[str], list[str]]:
    if name.lower().endswith((".csv", ".tsv")):
        try:
            frame = pd.read_csv(io.BytesIO(payload), dtype=str, sep="\t" if name.lower().endswith(".tsv") else ",")
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"{name} cannot be read as a table: {str(exc).strip()}") from None
        return molecules_from_frame(frame, name)
    try:
        return parse_text(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{name} is not a text file; upload a .smi, .txt or .csv file") from None


def create_app(predictor: Predictor) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES

    def gather() -> tuple[list[str], list[str]]:
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            return parse_upload(upload.filename, upload.read())
        return parse_text(request.form.get("smiles", ""))

    @app.get("/")
    def index() -> str:
        return render_template("predict.html", model=predictor.info, result=None, error=None, text="",
                               max_molecules=MAX_MOLECULES)

    @app.post("/")
    def predict_page() -> tuple[str, int] | str:
        text = request.form.get("smiles", "")
        try:
            smiles, names = gather()
            if not smiles:
                raise InputError("no molecules given: paste SMILES (one per line) or upload a file")
            result = predictor.predict(smiles, names)
        except InputError as exc:
            return render_template("predict.html", model=predictor.info, result=None, error=str(exc), text=text,
                                   max_molecules=MAX_MOLECULES), 400
        table = result.table
        rows = table.head(PAGE_LIMIT).to_dict(orient="records")
        pictures = [molecule_svg(s) for s in table["smiles"].head(PAGE_LIMIT)]
        return render_template("predict.html", model=predictor.info, result=result, rows=rows, pictures=pictures,
                               error=None, text=text, csv=table.to_csv(index=False), truncated=len(table) > PAGE_LIMIT,
                               max_molecules=MAX_MOLECULES)

    @app.post("/predict.csv")
    def predict_csv() -> Response:
        try:
            smiles, names = gather()
            table = predictor.predict(smiles, names).table
        except InputError as exc:
            return Response(f"error: {exc}\n", status=400, mimetype="text/plain")
        return Response(table.to_csv(index=False), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=predictions.csv"})

    @app.errorhandler(413)
    def too_large(_: Exception) -> tuple[str, int]:
        return render_template("predict.html", model=predictor.info, result=None, text="",
                               error=f"upload larger than {MAX_UPLOAD_BYTES // 2**20} MB; split the file",
                               max_molecules=MAX_MOLECULES), 413

    return app
