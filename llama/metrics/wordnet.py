"""WordNet for METEOR, from a local folder (nothing is downloaded).

METEOR matches synonyms through WordNet. nltk's own data (`nltk_data/corpora/wordnet`) works
as it is; so does Princeton WordNet 3.0's `dict/` folder, e.g. Debian's `wordnet-base`
package (`/usr/share/wordnet`), which lacks only the `lexnames` table: we then read a private
copy plus that fixed 45-line table (the lexicographer file numbers of
WordNet 3.0, lexnames(5WN)). Without a folder METEOR is reported as unavailable, with the reason.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from llama.errors import UserError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
_NEEDED = ("data.noun", "index.noun", "data.verb", "index.verb", "data.adj", "index.adj",
           "data.adv", "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")
_LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
             "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
             "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
             "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
             "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
             "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
             "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl").split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_shadows: dict[Path, Path] = {}      # a Debian folder -> its shadow with lexnames, once per process


class WordNetUnavailable(Exception):
    """No usable WordNet: METEOR is reported as unavailable with this reason."""


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


def _nltk_folder() -> Path | None:
    import nltk.data

    for root in nltk.data.path:
        cand = Path(str(root)) / "corpora" / "wordnet"
        if (cand / "lexnames").is_file():
            return cand
    return None


def find_wordnet(folder: str | Path | None) -> Path:
    """The folder to read: the one given (must be a WordNet dict folder, else UserError), or
    nltk's own data, or Debian's; WordNetUnavailable when there is none."""
    if folder is not None:
        folder = Path(folder)
        missing = [n for n in _NEEDED if not (folder / n).is_file()]
        if missing:
            raise UserError(f"--wordnet-dir {folder}: not a WordNet 3.0 dict folder (no {', '.join(missing[:3])})")
        return folder
    for cand in (_nltk_folder(), DEBIAN_WORDNET):
        if cand is not None and all((cand / n).is_file() for n in _NEEDED):
            return cand
    raise WordNetUnavailable("no WordNet data found (give --wordnet-dir: nltk's corpora/wordnet or "
                             "WordNet 3.0's dict/ folder, e.g. Debian's wordnet-base -> /usr/share/wordnet)")


def _shadow(folder: Path) -> Path:
    """A private copy of `folder` with the lexnames table added (~30 MB; nltk refuses links that
    leave its root, so the files are copied, once per process)."""
    if folder in _shadows:
        return _shadows[folder]
    shadow = Path(tempfile.mkdtemp(prefix="mumu-wordnet-"))
    for f in folder.iterdir():
        if f.is_file():
            shutil.copyfile(f, shadow / f.name)
    (shadow / "lexnames").write_text(lexnames_text())
    _shadows[folder] = shadow
    return shadow


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        """English only: no mapping of synsets to another WordNet version for multilingual data
        (nltk builds it by loading its own downloaded copy, which we do not have or need)."""

        def map_wn(self, version="wordnet"):
            return None

    return EnglishWordNet


def open_wordnet(folder: str | Path | None = None):
    """An nltk WordNet reader on a local folder (see `find_wordnet`)."""
    import warnings

    import nltk.data

    root = find_wordnet(folder).resolve()
    if not (root / "lexnames").is_file():
        root = _shadow(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))      # nltk reads corpora only under its data paths
    try:
        with warnings.catch_warnings():     # "multilingual functions are not available": by design
            warnings.simplefilter("ignore", UserWarning)
            return _reader_class()(str(root), None)
    except (OSError, ValueError, AssertionError) as e:
        raise UserError(f"{root}: cannot be read as WordNet ({type(e).__name__}: {e})") from None
