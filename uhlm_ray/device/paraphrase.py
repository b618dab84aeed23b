"""Paraphrased prompts for prompt-perturbation uncertainty: WordNet synonym substitution (the U-HLM paper's [10]).

WordNet is read with nltk's WordNet reader from Debian's `wordnet-base` (/usr/share/wordnet) or from nltk's data
folder (`python -m nltk.downloader wordnet`). Debian's files lack `lexnames`, the fixed table of WordNet 3.0's 45
lexicographer files that nltk's reader needs, so the folder is mirrored into the user cache with that table added.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.models.embedded import cache_root
from uhlm_ray.sampling.rng import Purpose, keyed_rng
from uhlm_ray.validation import ConfigError, check_range

DEBIAN_WORDNET = Path("/usr/share/wordnet")
INSTALL_HINT = ("install WordNet with `sudo apt-get install wordnet-base` (Debian/Ubuntu) or "
                "`python -m nltk.downloader wordnet`, or set uncertainty.wordnet_dir to a WordNet 3.0 dict folder")

# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name, syntactic category
_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1",
    "noun.feeling 1", "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1",
    "noun.person 1", "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1",
    "verb.body 2", "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2",
    "verb.consumption 2", "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2",
    "verb.perception 2", "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)
_WORD = re.compile(r"[A-Za-z]+")
# function words and very short words keep the instruction's meaning when left alone
_KEEP = frozenset("the a an and or but if of to in on at by for with from as is are was were be been being this "
                  "that these those it its into than then there their they them what which who whom whose how "
                  "why when where not no do does did can could should would will shall may might must about over "
                  "under after before between through during without within also very just only such each all any "
                  "some more most other".split())


def _wordnet_folder(configured: str | None) -> Path:
    """A folder nltk's WordNet reader accepts: the configured one, nltk's data, or Debian's with lexnames added."""
    candidates = [Path(configured)] if configured else []
    try:
        import nltk

        for root in nltk.data.path:
            candidates.append(Path(root) / "corpora" / "wordnet")
    except ImportError as err:
        raise ConfigError(f"prompt perturbation needs nltk (pip install nltk); {INSTALL_HINT}") from err
    candidates.append(DEBIAN_WORDNET)
    for folder in candidates:
        if (folder / "data.noun").is_file() and (folder / "index.noun").is_file():
            if (folder / "lexnames").is_file():
                return folder
            return _with_lexnames(folder)
    raise ConfigError(f"uncertainty.measure=prompt_perturbation: WordNet not found (looked in "
                      f"{', '.join(str(c) for c in candidates)}); {INSTALL_HINT}")


def _with_lexnames(folder: Path) -> Path:
    mirror = cache_root() / "wordnet" / folder.resolve().as_posix().strip("/").replace("/", "_")
    mirror.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():  # copies, not links: nltk refuses files that resolve outside its root
        target = mirror / item.name
        if item.is_file() and not target.exists():
            shutil.copyfile(item, target.with_suffix(target.suffix + ".part"))
            os.replace(target.with_suffix(target.suffix + ".part"), target)
    lexnames = mirror / "lexnames"
    if not lexnames.is_file():
        lexnames.write_text("".join(f"{i:02d}\t{name.replace(' ', chr(9))}\n" for i, name in enumerate(_LEXNAMES)))
    return mirror


@lru_cache(maxsize=4)
def load_wordnet(configured: str | None = None):
    """nltk's WordNetCorpusReader over the first WordNet folder found."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _EnglishOnly(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # the mapping to nltk's own WordNet serves multilingual data only
            return None

    folder = _wordnet_folder(configured)
    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))  # nltk only reads from folders on its data path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "multilingual functions are not available": not used
        return _EnglishOnly(str(folder), None)


def synonyms(wordnet, word: str) -> list[str]:
    """Single-word WordNet synonyms of `word` (any part of speech), sorted, the word itself excluded."""
    lower = word.lower()
    names = {lemma.name() for synset in wordnet.synsets(lower) for lemma in synset.lemmas()}
    return sorted(n for n in names if n.isalpha() and n.lower() != lower)


def paraphrases(*, prompt: str, k: int, rate: float, rng: np.random.Generator, wordnet) -> list[str]:
    """K paraphrases: each content word with synonyms is replaced by a random one with probability `rate`."""
    check_range(k, field="uncertainty.k", low=1)
    check_range(rate, field="uncertainty.substitution_rate", low=0.0, high=1.0)
    words = list(_WORD.finditer(prompt))
    options = {m.start(): synonyms(wordnet, m.group()) for m in words
               if m.group().lower() not in _KEEP and len(m.group()) > 2}
    out = []
    for _ in range(k):
        pieces, last = [], 0
        for m in words:
            choices = options.get(m.start())
            if choices and rng.random() < rate:
                pieces += [prompt[last:m.start()], choices[int(rng.integers(len(choices)))]]
                last = m.end()
        out.append("".join(pieces) + prompt[last:])
    return out


def paraphrase_prompt_ids(*, tokenizer, prompt: str, cfg, prompt_index: int) -> list[list[int]] | None:
    """The K paraphrases of a prompt in the chat template, drawn with the prompt's own keyed generator; None when
    the configured uncertainty measure is not prompt perturbation (nothing to paraphrase for)."""
    if cfg.uncertainty.measure != "prompt_perturbation":
        return None
    rng = keyed_rng(seed=cfg.decode.seed, prompt=prompt_index, round_index=0, purpose=Purpose.PARAPHRASE)
    texts = paraphrases(prompt=prompt, k=cfg.uncertainty.k, rate=cfg.uncertainty.substitution_rate, rng=rng,
                        wordnet=load_wordnet(cfg.uncertainty.wordnet_dir))
    return [chat_prompt_ids(tokenizer=tokenizer, prompt=text) for text in texts]
