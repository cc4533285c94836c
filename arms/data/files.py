"""Reading the local data files, so that a malformed one names itself and its line; clearing
a run folder of the files a previous run of the same command wrote there; writing each
file of a run whole or not at all (:func:`write_whole`), and a run's files all at once
(:func:`staged_run_folder`).

pandas reports a bad value in its own words, often without the file or the line (``invalid
literal for int() with base 10: 'abc'``, ``Integer column has NA values in column 3``).
:func:`read_table` and :func:`whole_numbers` re-raise such failures as a ``ValueError`` that
starts with the file's path and, where the line is known, ``line N:``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arms.data.dataset import is_whole
from arms.errors import DataFileError


def reads_no_data(reader: str, why: str) -> str:
    """The one refusal of a data folder (``--data``) given to what reads no data file: an
    ignored option is refused, never dropped in silence (found by a README check: ``replay
    --synthetic 2000 --data /nonexistent`` ran and wrote ``"data": "/nonexistent"`` into its
    config). Every command says it after its own ``--data:``: simulate for an environment
    that takes no ``data_dir`` and for the synthetic dataset, ``evaluate-arms`` and
    ``replay`` with ``--synthetic``, the service's commands with ``--dataset synthetic``.

    Parameters
    ----------
    reader : str
        What was asked to read the folder (``"the synthetic dataset"``, an environment id).
    why : str
        Why it reads none, in a few words.

    Returns
    -------
    str
        ``"<reader> reads no data files (<why>); leave --data out"``.
    """
    return f"{reader} reads no data files ({why}); leave --data out"


#: Why the synthetic dataset reads no data folder, as :func:`reads_no_data` says it.
SYNTHETIC_READS_NO_DATA = reads_no_data("the synthetic dataset",
                                        "its ratings are generated, not read")


def clear_run_files(folder: Path, names: Iterable[str]) -> Path:
    """Make ``folder`` (and its parents) and remove the files ``names`` from it, before a run
    writes them: the folder then describes one run, not this run's files beside a previous
    run's (found by attack: ``simulate --out`` into an older run's folder kept its plots).

    The one rule of the commands that write into ``--out`` (``simulate``, ``replay``,
    ``evaluate-arms``); it lives here, not in ``experiments``, because ``serving`` (whose
    ``ope`` writes there too) may import ``arms`` only. Files of other names are never
    touched.

    Parameters
    ----------
    folder : pathlib.Path
        The run's folder.
    names : iterable of str
        Every file name the command may write into it (also those a run writes only in some
        cases, as a figure or ``ope --shadow``'s table).

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).unlink(missing_ok=True)
        # And what a run killed mid-write left (write_whole's partial files: review).
        for partial in folder.glob(_partial_name(Path(name), "*")):
            partial.unlink(missing_ok=True)
    return folder


def _partial_name(path: Path, tag: str) -> str:
    """The name of :func:`write_whole`'s partial file of ``path`` (``tag``: its pid, or ``*``
    to match any: :func:`clear_run_files` removes those a killed run left).
    """
    return f".{path.stem}.partial-{tag}{path.suffix}"


def write_whole(path: Path, write: Callable[[Path], object]) -> Path:
    """Write the file ``path`` by ``write(partial)``, a file of the same folder (and suffix,
    which pandas and matplotlib read the format from) renamed onto ``path`` once complete: a
    run's file is whole or absent, never cut off.

    The one rule of every file a command writes into ``--out`` (or ``--export-csv``): found by
    attack, a full disk left a ``steps.csv`` cut mid-row, nothing saying so, and a traceback
    naming no file. An ``OSError`` is raised again naming ``path`` (its ``filename``), which
    the CLI says in one line.
    """
    partial = path.with_name(_partial_name(path, str(os.getpid())))
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(partial), partial):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return path


def read_table(path: Path, *, dtype: Mapping[Any, Any],
               labels: Mapping[Any, str] | None = None, **options: Any) -> pd.DataFrame:
    """``pandas.read_csv(path, dtype=dtype, **options)``, naming the file and line on failure.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    dtype : mapping
        Column dtypes, as for :func:`pandas.read_csv`; a value of a numeric column that is
        missing or does not parse is reported with its line.
    labels : mapping, optional
        Names of columns for the message (``{2: "item_id"}`` where the file has no header).
    **options
        Passed to :func:`pandas.read_csv`.

    Raises
    ------
    ValueError
        If pandas cannot read the file: ``"<path>: line <n>: <column> 'abc' is not an
        integer"``, or pandas' own message after the path where the line is unknown.
    """
    try:
        frame: pd.DataFrame = pd.read_csv(path, dtype=dtype, **options)
    except (ValueError, TypeError, OverflowError) as exc:  # a ParserError is a ValueError
        found = _first_bad_value(path, dtype, labels or {}, options)
        raise DataFileError(f"{path}: {found or str(exc).strip()}") from exc
    return frame


def whole_numbers(values: pd.Series, path: Path, what: str) -> pd.Series:
    """``values`` (text indexed by line number) as int64, naming the first line that is not one.

    Parameters
    ----------
    values : pandas.Series
        Text fields, indexed by their 1-based line numbers in ``path``.
    path : pathlib.Path
        The file they come from, for the message.
    what : str
        The field's name, for the message.

    Raises
    ------
    ValueError
        ``"<path>: line <n>: <what> 'abc' is not an integer"``.
    """
    bad = _not_whole(values)
    if bad.any():
        line = values.index[bad][0]
        raise DataFileError(f"{path}: line {line}: {_problem(what, values[line], 'an integer')}")
    # "1.0" and "1e0" are whole numbers too (found by review: astype failed on them with a
    # bare "invalid literal for int()"): through the float they were checked as.
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return pd.to_numeric(text).astype(np.int64)


def _not_whole(values: pd.Series, *, integer: bool = True) -> np.ndarray:
    """Where text ``values`` are missing or not numbers (whole numbers if ``integer``)."""
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    if integer:  # the Dataset's own test of ids and seconds
        return ~is_whole(text)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    good = ~np.isnan(numbers) | text.str.lower().isin(["nan", "inf", "-inf"]).to_numpy()
    return np.asarray(~good, dtype=bool)


def _problem(what: str, value: object, noun: str) -> str:
    """``"<what> is missing"`` or ``"<what> 'abc' is not <noun>"``."""
    if value is None or value != value or str(value).strip() == "":
        return f"{what} is missing"
    shown = str(value)
    if len(shown) > SHOWN_VALUE_CHARS:  # the file's field, quoted at most this long
        shown = shown[:SHOWN_VALUE_CHARS] + "..."
    return f"{what} {shown!r} is not {noun}"


#: The longest part of a bad field a message quotes.
SHOWN_VALUE_CHARS = 40


def _first_bad_value(path: Path, dtype: Mapping[Any, Any], labels: Mapping[Any, str],
                     options: Mapping[str, Any]) -> str | None:
    """``"line <n>: <column> <value> is not ..."`` for the first bad numeric value, or None.

    The file is read again as text, blank lines kept so that row ``r`` is a known line; a
    file pandas cannot split into fields gives pandas' message, which names the line.
    """
    text_options = {**options, "dtype": str, "keep_default_na": False, "skip_blank_lines": False}
    text_options.pop("index_col", None)
    header = options.get("header", None if "names" in options else 0)
    first_line = 1 if header is None else int(header) + 2
    offset = 0
    try:
        # In chunks: read whole as text, a 2-million-row u.data with a bad last line peaked
        # at 584 MB only to name it; by chunks 238 MB (the failed typed read's own), 5.6 s.
        for frame in pd.read_csv(path, chunksize=FAILURE_CHUNK_ROWS, **text_options):
            found = _first_bad_row(frame.fillna(""), dtype, labels)
            if found is not None:
                return f"line {offset + found[0] + first_line}: {found[1]}"
            offset += len(frame)
    except (ValueError, TypeError) as exc:
        return str(exc).strip()
    return None


def line_of_row(path: Path, row: int, **options: Any) -> int:
    """The 1-based line of ``path`` holding row ``row`` (a position) of the frame
    :func:`read_table` read from it with ``options``: the one numbering of a file's messages
    (found by a README check: a rating the dataset refused was "ratings row 100", a value that
    was no number on the same line "line 101"). Read again as text, blank lines kept (pandas
    skips them in the frame), only when a message needs it.

    Raises
    ------
    ValueError
        If the file holds fewer rows.
    """
    text_options = {**options, "dtype": str, "keep_default_na": False, "skip_blank_lines": False}
    text_options.pop("index_col", None)
    header = options.get("header", None if "names" in options else 0)
    first_line = 1 if header is None else int(header) + 2
    offset = seen = 0
    for frame in pd.read_csv(path, chunksize=FAILURE_CHUNK_ROWS, **text_options):
        rows = np.flatnonzero(~(frame.fillna("") == "").all(axis=1).to_numpy())
        if seen + len(rows) > row:
            return offset + int(rows[row - seen]) + first_line
        seen += len(rows)
        offset += len(frame)
    raise ValueError(f"{path} holds {seen} rows, not row {row}")


#: Rows of text :func:`_first_bad_value` reads at a time.
FAILURE_CHUNK_ROWS = 100_000


def _first_bad_row(frame: pd.DataFrame, dtype: Mapping[Any, Any], labels: Mapping[Any, str]
                   ) -> tuple[int, str] | None:
    """The first row of the text ``frame`` (missing values as ``""``) holding a value its
    numeric column cannot take, with what is wrong with it; None if every value parses.
    """
    blank = (frame == "").all(axis=1).to_numpy()
    found: tuple[int, str] | None = None
    for column, kind in dtype.items():
        try:
            numeric = np.dtype(kind).kind
        except TypeError:  # "category" and the like
            continue
        if numeric not in "iuf" or column not in frame.columns:
            continue
        bad = _not_whole(frame[column], integer=numeric != "f") & ~blank
        if bad.any() and (found is None or int(np.flatnonzero(bad)[0]) < found[0]):
            row = int(np.flatnonzero(bad)[0])
            noun = "a number" if numeric == "f" else "an integer"
            found = row, _problem(str(labels.get(column, column)), frame[column].iloc[row], noun)
    return found


@contextlib.contextmanager
def staged_run_folder(folder: Path, names: Collection[str]) -> Iterator[Path]:
    """Yield an empty folder beside ``folder`` (same file system) to write a run's files
    into; once the block ends normally, move each of them whose name is in ``names`` onto
    ``folder`` (made if missing) and remove the ``names`` it did not write from ``folder``
    (:func:`clear_run_files`): ``folder`` holds one run, the earlier or this one.

    Found by review: a run replacing its files one at a time as it wrote them, a Ctrl-C
    during its plots (seconds) left the new tables beside the earlier run's figures. Now an
    exception in the block (Ctrl-C included) leaves ``folder`` as it was; the swap itself
    is renames only, and a Ctrl-C during it is held until it is done (in the main thread,
    where Python delivers signals), then raised.

    Parameters
    ----------
    folder : pathlib.Path
        The run's folder (``--out``); its parents are made.
    names : collection of str
        Every file name the command may write into it.

    Yields
    ------
    pathlib.Path
        The staging folder, removed when the block ends whatever happened. An ``OSError``
        raised in the block naming a file of it is raised again naming that file in
        ``folder``, where the user looks (the CLI says it in one line).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        try:
            yield staging
        except OSError as exc:  # named where it was going (the user's --out), as write_whole
            if exc.filename is None or Path(exc.filename).parent != staging:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc),
                          str(folder / Path(exc.filename).name)) from exc
        written = [name for name in names if (staging / name).is_file()]
        folder.mkdir(exist_ok=True)
        with _sigint_held():
            for name in written:
                os.replace(staging / name, folder / name)
            clear_run_files(folder, [name for name in names if name not in written])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) during the block and deliver it after, to the handler in force
    before: a block of renames is not cut half way. Only the main thread can set a signal
    handler (and only it receives one), so elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)
